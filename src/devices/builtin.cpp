#include "devices/builtin.hpp"

#include "devices/generic.hpp"
#include "devices/pci_front.hpp"
#include "devices/test_device.hpp"
#include "pci/pci_bus.hpp"

namespace potemkin::devices {

void register_builtin_device_classes(vm::DeviceClassRegistry& registry) {
    register_test_device(registry);
    pci::register_pci_bus(registry);
    register_pci_front(registry);
    register_generic(registry);
}

}  // namespace potemkin::devices

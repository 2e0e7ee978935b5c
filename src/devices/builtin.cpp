#include "devices/builtin.hpp"

#include "devices/generic.hpp"
#include "devices/pci_front.hpp"
#include "devices/pci_passthrough.hpp"
#include "devices/test_device.hpp"
#include "devices/uart16550.hpp"
#include "pci/pci_bus.hpp"

namespace potemkin::devices {

Result<void> register_builtin_device_classes(vm::DeviceClassRegistry& registry,
                                             const hostdev::TransportRegistry* transports) {
    POTEMKIN_TRY(register_test_device(registry));
    POTEMKIN_TRY(pci::register_pci_bus(registry));
    POTEMKIN_TRY(register_pci_front(registry, transports));
    POTEMKIN_TRY(register_pci_passthrough(registry, transports));
    POTEMKIN_TRY(register_generic(registry, transports));
    POTEMKIN_TRY(register_uart16550(registry));
    return ok();
}

}  // namespace potemkin::devices

#include "devices/builtin.hpp"

#include "devices/test_device.hpp"

namespace potemkin::devices {

void register_builtin_device_classes(vm::DeviceClassRegistry& registry) {
    register_test_device(registry);
}

}  // namespace potemkin::devices

#pragma once

#include "vm/device.hpp"

namespace potemkin::devices {

// Every device class that ships with potemkin, by configuration name.
void register_builtin_device_classes(vm::DeviceClassRegistry& registry);

}  // namespace potemkin::devices

#pragma once

#include "common/result.hpp"
#include "vm/device.hpp"

namespace potemkin::hostdev {
class TransportRegistry;
}

namespace potemkin::devices {

// Every device class that ships with potemkin, by configuration name. `transports` is where
// PCI_FRONT and GENERIC open their host devices (null: hostdev::TransportRegistry::builtin()).
// Fails on the first class already in `registry`, naming it.
Result<void> register_builtin_device_classes(
    vm::DeviceClassRegistry& registry, const hostdev::TransportRegistry* transports = nullptr);

}  // namespace potemkin::devices

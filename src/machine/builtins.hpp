// Every registration of built-in parts happens here: device models, host-device transports and
// device classes (static libraries would drop self-registering statics, so this is explicit).
#pragma once

#include "common/result.hpp"

namespace potemkin::sdk {
class ModelRegistry;
}
namespace potemkin::hostdev {
class TransportRegistry;
}
namespace potemkin::vm {
class DeviceClassRegistry;
}

namespace potemkin::machine {

struct BuiltinRegistries {
    sdk::ModelRegistry& models;
    hostdev::TransportRegistry& transports;  // opened by the inproc transport over `models`
    vm::DeviceClassRegistry& classes;        // PCI_FRONT and GENERIC open through `transports`
};

// Registers every built-in model, transport and device class in `r`. The first failure stops
// and is returned; a name registered twice is named in the error.
Result<void> register_builtins(const BuiltinRegistries& r);

// The same into the process-wide registries (sdk::ModelRegistry::builtin(),
// hostdev::TransportRegistry::builtin(), vm::DeviceClassRegistry::builtin()), once per process
// and thread-safe. Every caller gets the outcome of that one registration, a failure included,
// so whoever calls it first or last fails alike.
Result<void> register_builtins();

}  // namespace potemkin::machine

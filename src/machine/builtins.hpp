#pragma once

namespace potemkin::machine {

// Registers the built-in device models and host-device transports in their process-wide
// registries, once (static libraries would drop self-registering statics, so this is explicit).
void register_builtins();

}  // namespace potemkin::machine

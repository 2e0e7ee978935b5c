// The models that ship with potemkin, registered explicitly (a static library's static
// initializers are dropped by the linker when nothing references their object file).
#pragma once

#include "common/result.hpp"
#include "sdk/device_model.hpp"

namespace potemkin::models {

// Adds "edu" and "multibar" to `registry`. Fails if either name is already there. The VM
// assembler calls it once at startup with sdk::ModelRegistry::builtin().
Result<void> register_builtin_models(sdk::ModelRegistry& registry);

}  // namespace potemkin::models

// Helpers for model factories reading their ModelParams (the URL query of inproc:NAME?k=v or
// a server's command line). Unknown keys are errors, so a misspelt parameter never silently
// falls back to a default.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string_view>

#include "common/result.hpp"
#include "sdk/device_model.hpp"

namespace potemkin::sdk {

// Fails naming the first key not in `known` and listing the known ones.
Result<void> check_params(const ModelParams& params, std::initializer_list<std::string_view> known);

// An unsigned integer parameter: decimal, 0x hex or 0b binary; `fallback` when absent. Fails
// on trailing junk or overflow.
Result<uint64_t> param_u64(const ModelParams& params, std::string_view key, uint64_t fallback);

// A boolean parameter: 1/0, true/false, on/off, yes/no; `fallback` when absent.
Result<bool> param_bool(const ModelParams& params, std::string_view key, bool fallback);

}  // namespace potemkin::sdk

// CPU engines by name. A new engine is one file in cpu/ defining its create function and one
// entry in engine_factory.cpp (the function's declaration and a table row); the machine and
// the tools ask for engines by name only.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "common/result.hpp"
#include "cpu/cpu_engine.hpp"

namespace potemkin::cpu {

// The engine a VM runs on unless its settings name another.
inline constexpr std::string_view kDefaultEngine = "unicorn";

using EngineMaker = Result<std::unique_ptr<CpuEngine>> (*)(const EngineSettings& settings);

struct EngineEntry {
    std::string_view name;
    std::string_view summary;  // one line, for --help and error messages
    EngineMaker make;
};

// Every engine this build offers, the default first.
std::span<const EngineEntry> engines();
// The known names, comma-separated ("unicorn, kvm").
std::string engine_names();
// The engine called `name`, or an error naming it and the known ones.
Result<const EngineEntry*> find_engine(std::string_view name);
// One vCPU on the engine called `name`.
Result<std::unique_ptr<CpuEngine>> create_engine(std::string_view name,
                                                 const EngineSettings& settings);

}  // namespace potemkin::cpu

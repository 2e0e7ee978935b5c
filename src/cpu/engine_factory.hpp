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
// Not an engine but a choice: KVM when the KVM device is usable, else Unicorn.
inline constexpr std::string_view kAutoEngine = "auto";

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
// Whether KVM can be used through `device` (normally "/dev/kvm"): ok, or an error that names
// what is missing (the device or its modules, permission, the API version, a capability).
Result<void> kvm_usable(std::string_view device);
// The engine a VM asking for `requested` runs on: "auto" is kvm when kvm_usable(kvm_device),
// else unicorn; "kvm" is checked with kvm_usable so that a missing KVM is reported before any
// device exists; any other name as find_engine. Errors list the known names and "auto".
Result<const EngineEntry*> choose_engine(std::string_view requested, std::string_view kvm_device);
// One vCPU on the engine called `name`.
Result<std::unique_ptr<CpuEngine>> create_engine(std::string_view name,
                                                 const EngineSettings& settings);

}  // namespace potemkin::cpu

#include "cpu/engine_factory.hpp"

#include <array>

namespace potemkin::cpu {

// The engines, one file each.
Result<std::unique_ptr<CpuEngine>> create_unicorn_engine(const EngineSettings& settings);

namespace {

// One row per engine, the default first.
constexpr std::array kEngines = {
    EngineEntry{"unicorn", "embedded Unicorn 2 (QEMU TCG), 32-bit protected mode",
                &create_unicorn_engine},
};
static_assert(kEngines[0].name == kDefaultEngine);

}  // namespace

std::span<const EngineEntry> engines() {
    return kEngines;
}

std::string engine_names() {
    std::string out;
    for (const auto& e : kEngines) {
        if (!out.empty()) out += ", ";
        out += e.name;
    }
    return out;
}

Result<const EngineEntry*> find_engine(std::string_view name) {
    for (const auto& e : kEngines)
        if (e.name == name) return &e;
    return failf("unknown CPU engine '{}' (known: {})", name, engine_names());
}

Result<std::unique_ptr<CpuEngine>> create_engine(std::string_view name,
                                                 const EngineSettings& settings) {
    POTEMKIN_TRY_ASSIGN(const EngineEntry* engine, find_engine(name));
    return engine->make(settings);
}

}  // namespace potemkin::cpu

#include "cpu/engine_factory.hpp"

#include <array>

#include "common/log.hpp"

namespace potemkin::cpu {

// The engines, one file each.
Result<std::unique_ptr<CpuEngine>> create_unicorn_engine(const EngineSettings& settings);
Result<std::unique_ptr<CpuEngine>> create_kvm_engine(const EngineSettings& settings);

namespace {

// One row per engine, the default first.
constexpr std::array kEngines = {
    EngineEntry{"unicorn", "embedded Unicorn 2 (QEMU TCG), 32-bit protected mode",
                &create_unicorn_engine},
    EngineEntry{"kvm", "Linux KVM (/dev/kvm), the VMM's own PIC and LAPIC", &create_kvm_engine},
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
    return failf("unknown CPU engine '{}' (known: {}, {})", name, engine_names(), kAutoEngine);
}

Result<const EngineEntry*> choose_engine(std::string_view requested, std::string_view kvm_device) {
    if (requested == kAutoEngine) {
        if (auto usable = kvm_usable(kvm_device); !usable) {
            log::info("engine auto: unicorn ({})", usable.error().message);
            return find_engine(kDefaultEngine);
        }
        return find_engine("kvm");
    }
    POTEMKIN_TRY_ASSIGN(const EngineEntry* engine, find_engine(requested));
    if (engine->name == "kvm") POTEMKIN_TRY(kvm_usable(kvm_device));
    return engine;
}

Result<std::unique_ptr<CpuEngine>> create_engine(std::string_view name,
                                                 const EngineSettings& settings) {
    POTEMKIN_TRY_ASSIGN(const EngineEntry* engine, find_engine(name));
    return engine->make(settings);
}

}  // namespace potemkin::cpu

// Naming a request in error messages without paying for the name on the per-access path: the
// clients of every out-of-process transport (vfio-user, mpqemu) describe each request ("BAR_READ
// of BAR0 at 0x8 (4 bytes)") but only an error needs that text, and formatting it for every
// access would be one heap allocation per guest access.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "hostdev/host_device.hpp"

namespace potemkin::hostdev {

// A request's name, formatted only when asked for with str(). Only ever a parameter: it points
// at its argument, which lives as long as the call. Implicit, so that a literal, a string or a
// lambda returning one can be passed as they are.
class What {
  public:
    What(const char* text)  // NOLINT: implicit on purpose
        : obj_(text), fn_([](const void* p) { return std::string(static_cast<const char*>(p)); }) {}
    What(const std::string& text)  // NOLINT
        : obj_(&text), fn_([](const void* p) { return *static_cast<const std::string*>(p); }) {}
    template <typename F, typename = std::enable_if_t<std::is_invocable_r_v<std::string, const F&>>>
    What(const F& make)  // NOLINT
        : obj_(&make), fn_([](const void* p) { return (*static_cast<const F*>(p))(); }) {}
    std::string str() const { return fn_(obj_); }

  private:
    const void* obj_;
    std::string (*fn_)(const void*);
};

// "BAR2", "ROM", "config", "region 9": VFIO's region numbering in words.
inline std::string region_name(uint32_t index) {
    if (index < kRomRegion) return fmt::format("BAR{}", index);
    if (index == kRomRegion) return "ROM";
    if (index == kConfigRegion) return "config";
    return fmt::format("region {}", index);
}

// "INTx", "MSI", "MSI-X" for VFIO's interrupt index (IrqKind's numbering); "IRQ" otherwise.
inline const char* irq_name(uint32_t index) {
    switch (index) {
        case static_cast<uint32_t>(IrqKind::intx):
            return "INTx";
        case static_cast<uint32_t>(IrqKind::msi):
            return "MSI";
        case static_cast<uint32_t>(IrqKind::msix):
            return "MSI-X";
        default:
            return "IRQ";
    }
}
inline const char* irq_name(IrqKind kind) {
    return irq_name(static_cast<uint32_t>(kind));
}

}  // namespace potemkin::hostdev

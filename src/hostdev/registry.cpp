// The transport registry: URL scheme → opener. The process-wide instance starts empty;
// transports living above hostdev (inproc in sdk, ...) are added by whoever assembles the
// VM, because a static library cannot register itself reliably (the linker drops object
// files nobody references, static initializers included).
#include <fmt/format.h>

#include "hostdev/host_device.hpp"

namespace potemkin::hostdev {

TransportRegistry& TransportRegistry::builtin() {
    static TransportRegistry registry;
    return registry;
}

Result<void> TransportRegistry::add(std::string scheme, TransportOpener opener) {
    // Reuse the URL parser's scheme rules so every registered scheme is reachable.
    auto probe = parse_url(scheme + ":x");
    if (!probe || probe->scheme != scheme) {
        return failf("transport scheme '{}' is not a valid URL scheme", scheme);
    }
    if (!opener) return failf("transport scheme '{}': no opener given", scheme);
    for (const auto& [known, unused] : openers_) {
        if (known == scheme) return failf("transport scheme '{}' is already registered", scheme);
    }
    openers_.emplace_back(std::move(scheme), std::move(opener));
    return ok();
}

Result<std::unique_ptr<HostDevice>> TransportRegistry::open(std::string_view url,
                                                            const OpenContext& ctx) const {
    auto parsed = parse_url(url);
    if (!parsed) return fail(parsed.error());
    for (const auto& [scheme, opener] : openers_) {
        if (scheme != parsed->scheme) continue;
        if (ctx.events == nullptr) {
            return failf("hostdev URL '{}': no event sink given to open it with", url);
        }
        auto device = opener(*parsed, ctx);
        if (!device) return fail(device.error().context(fmt::format("hostdev URL '{}'", url)));
        if (!*device) return failf("hostdev URL '{}': the transport returned no device", url);
        return device;
    }
    const auto known = schemes();
    return failf("hostdev URL '{}': unknown scheme '{}' (known: {})", url, parsed->scheme,
                 known.empty() ? std::string("none") : fmt::format("{}", fmt::join(known, ", ")));
}

std::vector<std::string> TransportRegistry::schemes() const {
    std::vector<std::string> out;
    out.reserve(openers_.size());
    for (const auto& [scheme, unused] : openers_) out.push_back(scheme);
    return out;
}

}  // namespace potemkin::hostdev

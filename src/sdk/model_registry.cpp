// The model registry: name → factory. The process-wide instance starts empty; the models part
// fills it through models::register_builtin_models() (sdk cannot call up into models, and a
// static initializer in a static library would be dropped by the linker).
#include <fmt/format.h>

#include "sdk/device_model.hpp"

namespace potemkin::sdk {

ModelRegistry& ModelRegistry::builtin() {
    static ModelRegistry registry;
    return registry;
}

Result<void> ModelRegistry::add(std::string name, std::string description, ModelFactory factory) {
    // The name becomes a URL path (inproc:NAME) and a command-line word: keep it plain.
    if (name.empty() || name.find_first_of(":?&=/ \t") != std::string::npos) {
        return failf("device model name '{}' is empty or contains one of ':?&=/' or a space", name);
    }
    if (!factory) return failf("device model '{}': no factory given", name);
    if (models_.contains(name)) return failf("device model '{}' is already registered", name);
    models_.emplace(std::move(name), Entry{std::move(description), std::move(factory)});
    return ok();
}

Result<std::unique_ptr<DeviceModel>> ModelRegistry::create(const std::string& name,
                                                           const ModelParams& params) const {
    const auto it = models_.find(name);
    if (it == models_.end()) {
        std::vector<std::string> known;
        for (const auto& [n, unused] : models_) known.push_back(n);
        return failf(
            "unknown device model '{}' (known: {})", name,
            known.empty() ? std::string("none") : fmt::format("{}", fmt::join(known, ", ")));
    }
    auto model = it->second.factory(params);
    if (!model) return fail(model.error().context(fmt::format("device model '{}'", name)));
    if (!*model) return failf("device model '{}': the factory returned no model", name);
    return model;
}

std::vector<std::pair<std::string, std::string>> ModelRegistry::list() const {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& [name, entry] : models_) out.emplace_back(name, entry.description);
    return out;
}

}  // namespace potemkin::sdk

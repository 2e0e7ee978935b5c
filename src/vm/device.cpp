#include "vm/device.hpp"

namespace potemkin::vm {

DeviceClassRegistry& DeviceClassRegistry::builtin() {
    static DeviceClassRegistry registry;
    return registry;
}

Result<void> DeviceClassRegistry::add(std::string name, DeviceFactory factory) {
    if (factories_.count(name)) return failf("device class '{}' is registered twice", name);
    factories_.emplace(std::move(name), std::move(factory));
    return ok();
}

const DeviceFactory* DeviceClassRegistry::find(std::string_view name) const {
    auto it = factories_.find(name);
    return it == factories_.end() ? nullptr : &it->second;
}

std::vector<std::string> DeviceClassRegistry::names() const {
    std::vector<std::string> out;
    for (const auto& [n, f] : factories_) out.push_back(n);
    return out;
}

DeviceManager::~DeviceManager() {
    while (!devices_.empty()) devices_.pop_back();
}

Result<void> DeviceManager::create_all(const std::vector<ConfigElement>& elements,
                                       DeviceContext& ctx) {
    for (const auto& e : elements) {
        auto cls = e.required("class");
        if (!cls) return fail(cls.error());
        auto id = e.required("id");
        if (!id) return fail(id.error());
        if (find(*id))
            return fail(e.attr_error("id", fmt::format("'{}' is used by another device", *id)));
        const DeviceFactory* factory = classes_.find(*cls);
        if (!factory) {
            std::string known;
            for (const auto& n : classes_.names()) known += (known.empty() ? "" : ", ") + n;
            return fail(e.attr_error(
                "class", fmt::format("names unknown device class '{}' (known: {})", *cls, known)));
        }
        auto dev = (*factory)(e, ctx);
        if (!dev) return fail(dev.error());
        devices_.push_back(std::move(*dev));
    }
    return ok();
}

Result<Device*> DeviceManager::adopt(std::unique_ptr<Device> device) {
    if (find(device->id())) return failf("device id '{}' is used twice", device->id());
    devices_.push_back(std::move(device));
    return devices_.back().get();
}

Device* DeviceManager::find(std::string_view id) const {
    for (const auto& d : devices_)
        if (d->id() == id) return d.get();
    return nullptr;
}

void DeviceManager::reset_all() {
    for (const auto& d : devices_) d->reset();
}

}  // namespace potemkin::vm

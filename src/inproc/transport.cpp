#include "inproc/transport.hpp"

#include <fmt/format.h>

namespace potemkin::inproc {

InprocHostDevice::InprocHostDevice(std::unique_ptr<sdk::ModelServer> server, std::string label)
    : server_(std::move(server)), label_(std::move(label)) {}

InprocHostDevice::~InprocHostDevice() {
    close();
}

Result<std::unique_ptr<InprocHostDevice>> InprocHostDevice::open(
    std::unique_ptr<sdk::DeviceModel> model, hostdev::HostDeviceEvents* events, std::string label,
    const sdk::ModelServerSettings& settings) {
    if (events == nullptr) return failf("{}: no event sink given", label);
    auto server = sdk::ModelServer::create(std::move(model), events, settings);
    if (!server) return fail(server.error().context(label));
    return std::unique_ptr<InprocHostDevice>(
        new InprocHostDevice(std::move(server).value(), std::move(label)));
}

Result<sdk::ModelServer*> InprocHostDevice::live() {
    if (!server_) return failf("{}: device is closed", label_);
    return server_.get();
}

Result<void> InprocHostDevice::settled(Result<void> outcome) {
    // The access has returned: now the work the model deferred to after it (its DMA).
    if (server_) server_->run_deferred();
    return outcome;
}

Result<hostdev::DeviceInfo> InprocHostDevice::info() {
    auto s = live();
    if (!s) return fail(s.error());
    return (*s)->info();
}

Result<hostdev::RegionInfo> InprocHostDevice::region_info(uint32_t index) {
    auto s = live();
    if (!s) return fail(s.error());
    return (*s)->region_info(index);
}

Result<void> InprocHostDevice::config_read(uint32_t offset, std::span<uint8_t> out) {
    auto s = live();
    if (!s) return fail(s.error());
    return (*s)->config_read(offset, out);
}

Result<void> InprocHostDevice::config_write(uint32_t offset, std::span<const uint8_t> in) {
    auto s = live();
    if (!s) return fail(s.error());
    return settled((*s)->config_write(offset, in));
}

Result<void> InprocHostDevice::region_read(uint32_t index, uint64_t offset,
                                           std::span<uint8_t> out) {
    auto s = live();
    if (!s) return fail(s.error());
    return settled((*s)->region_read(index, offset, out));
}

Result<void> InprocHostDevice::region_write(uint32_t index, uint64_t offset,
                                            std::span<const uint8_t> in) {
    auto s = live();
    if (!s) return fail(s.error());
    return settled((*s)->region_write(index, offset, in));
}

Result<void> InprocHostDevice::set_irqs(hostdev::IrqKind kind, uint32_t count) {
    auto s = live();
    if (!s) return fail(s.error());
    return settled((*s)->set_irqs(kind, count));
}

Result<void> InprocHostDevice::ack_intx() {
    auto s = live();
    if (!s) return fail(s.error());
    (*s)->ack_intx();
    return settled(ok());
}

Result<void> InprocHostDevice::reset() {
    auto s = live();
    if (!s) return fail(s.error());
    (*s)->reset();
    return settled(ok());
}

void InprocHostDevice::close() {
    server_.reset();
}

Result<void> register_inproc_transport(hostdev::TransportRegistry& transports,
                                       const sdk::ModelRegistry& models) {
    return transports.add(
        "inproc",
        [&models](const hostdev::ParsedUrl& url,
                  const hostdev::OpenContext& ctx) -> Result<std::unique_ptr<hostdev::HostDevice>> {
            sdk::ModelParams params(url.params.begin(), url.params.end());
            auto model = models.create(url.path, params);
            if (!model) return fail(model.error());
            auto device = InprocHostDevice::open(std::move(model).value(), ctx.events,
                                                 fmt::format("inproc:{}", url.path));
            if (!device) return fail(device.error());
            return std::unique_ptr<hostdev::HostDevice>(std::move(device).value());
        });
}

}  // namespace potemkin::inproc

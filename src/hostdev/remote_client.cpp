#include "hostdev/remote_client.hpp"

namespace potemkin::hostdev {

RemoteClient::RemoteClient(std::shared_ptr<HostDevice> state, RemoteLink& link)
    : state_(std::move(state)), link_(link) {}

bool RemoteClient::connected() const {
    return link_.up();
}
void RemoteClient::poll_events() {
    link_.drain();
}

RemoteClient::~RemoteClient() {
    RemoteClient::close();
}

Result<DeviceInfo> RemoteClient::info() {
    return state_->info();
}
Result<RegionInfo> RemoteClient::region_info(uint32_t index) {
    return state_->region_info(index);
}
Result<void> RemoteClient::config_read(uint32_t offset, std::span<uint8_t> out) {
    return state_->config_read(offset, out);
}
Result<void> RemoteClient::config_write(uint32_t offset, std::span<const uint8_t> in) {
    return state_->config_write(offset, in);
}
Result<void> RemoteClient::region_read(uint32_t index, uint64_t offset, std::span<uint8_t> out) {
    return state_->region_read(index, offset, out);
}
Result<void> RemoteClient::region_write(uint32_t index, uint64_t offset,
                                        std::span<const uint8_t> in) {
    return state_->region_write(index, offset, in);
}
Result<void> RemoteClient::set_irqs(IrqKind kind, uint32_t count) {
    return state_->set_irqs(kind, count);
}
Result<void> RemoteClient::complete_posted() {
    return state_->complete_posted();
}

Result<void> RemoteClient::ack_intx() {
    return state_->ack_intx();
}
Result<void> RemoteClient::reset() {
    return state_->reset();
}
void RemoteClient::close() {
    if (state_) state_->close();
}

}  // namespace potemkin::hostdev

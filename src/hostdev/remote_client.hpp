// The public face every out-of-process client shares (vfio-user, mpqemu; kernel VFIO next): a
// HostDevice whose calls go to the client's shared state. The state is a HostDevice too, held by
// a shared_ptr because the remote link's posted drains keep it alive through a weak pointer
// (a post that outlives the client then finds nothing to do). Closed on destruction.
#pragma once

#include <memory>

#include "hostdev/host_device.hpp"
#include "hostdev/remote_link.hpp"

namespace potemkin::hostdev {

class RemoteClient : public HostDevice {
  public:
    ~RemoteClient() override;
    RemoteClient(const RemoteClient&) = delete;
    RemoteClient& operator=(const RemoteClient&) = delete;

    Result<DeviceInfo> info() override;
    Result<RegionInfo> region_info(uint32_t index) override;
    Result<void> config_read(uint32_t offset, std::span<uint8_t> out) override;
    Result<void> config_write(uint32_t offset, std::span<const uint8_t> in) override;
    Result<void> region_read(uint32_t index, uint64_t offset, std::span<uint8_t> out) override;
    Result<void> region_write(uint32_t index, uint64_t offset,
                              std::span<const uint8_t> in) override;
    Result<void> set_irqs(IrqKind kind, uint32_t count) override;
    Result<void> ack_intx() override;
    Result<void> complete_posted() override;
    Result<void> reset() override;
    void close() override;

    // ---- Introspection every remote client offers (tests, probe) ----
    // The implementation is reachable now (false while it is lost and until it is restored).
    bool connected() const;
    // Runs what the poll thread queued, on the calling thread. Only needed without
    // OpenContext::post.
    void poll_events();

  protected:
    // `link` belongs to `state`, which outlives it here.
    RemoteClient(std::shared_ptr<HostDevice> state, RemoteLink& link);

  private:
    std::shared_ptr<HostDevice> state_;
    RemoteLink& link_;
};

// A client's shared state made and started (connect, set up), or closed again if starting
// failed: State has start() and close().
template <typename State, typename Settings>
Result<std::shared_ptr<State>> start_remote_state(Settings settings) {
    auto state = std::make_shared<State>(std::move(settings));
    if (auto r = state->start(); !r) {
        state->close();
        return fail(r.error());
    }
    return state;
}

}  // namespace potemkin::hostdev

// The notifiers behind a model's doorbells (DeviceSpec::doorbells) on the device-server side:
// one eventfd per doorbell, handed to the VMM (vfio-user: DEVICE_GET_REGION_IO_FDS), watched in
// the connection's wait set, and turned into ModelServer::ring_doorbell() calls.
//
// Order: a server that sees a doorbell fire first serves the requests already in its socket (the
// VMM posted them before it wrote the eventfd), then calls deliver(); the server does that, this
// class only collects and delivers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "common/unique_fd.hpp"
#include "sdk/model_server.hpp"
#include "sdk/serve_loop.hpp"

namespace potemkin::sdk {

class DoorbellFds {
  public:
    explicit DoorbellFds(std::string label) : label_(std::move(label)) {}
    DoorbellFds(const DoorbellFds&) = delete;
    DoorbellFds& operator=(const DoorbellFds&) = delete;
    ~DoorbellFds() { attach(nullptr); }

    // Fresh eventfds for every doorbell of `spec` (for each new client: one that went away must
    // not ring the next one's device through the fds it kept), unwatched from the old set.
    Result<void> renew(const DeviceSpec& spec);
    // Watch in `waits` (Event::doorbell) from now on; null: in none. The set must outlive it.
    void attach(WaitSet* waits);

    size_t size() const { return fds_.size(); }
    int fd(size_t index) const { return fds_[index].get(); }
    // The VMM has the fds now: they may fire at any time, so the server must wait in its wait
    // set (not in a socket read alone).
    void mark_handed_out() { handed_out_ = true; }
    bool handed_out() const { return handed_out_; }

    // After a wait reported Event::doorbell: every eventfd's count, added to the pending rings.
    void collect();
    bool pending() const { return pending_any_; }
    // The pending rings, to the model (ModelServer::ring_doorbell), in doorbell order. A count
    // beyond kMaxRingsPerDelivery (a runaway client) is cut there and logged.
    void deliver(ModelServer& server);
    static constexpr uint64_t kMaxRingsPerDelivery = 4096;

    uint64_t rings() const { return rings_; }

  private:
    std::string label_;
    std::vector<UniqueFd> fds_;
    std::vector<uint64_t> pending_;
    bool pending_any_ = false;
    bool handed_out_ = false;
    WaitSet* waits_ = nullptr;
    uint64_t rings_ = 0;
};

}  // namespace potemkin::sdk

// The config replay log of the remote link: the config-space bytes the guest wrote through the
// front-end, so that a client can give them back to a device process that is new (a reconnect
// to a restarted vfio-user server, a respawned QEMU) in the order the guest wrote them: the
// command register after the BARs and registers it enables, as the guest did it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <span>

#include "common/result.hpp"

namespace potemkin::hostdev {

class ConfigLog {
  public:
    // One guest write of `bytes` at `offset`. A byte written again takes its place in the order
    // of the later write.
    void record(uint32_t offset, std::span<const uint8_t> bytes);
    // After a device reset: what the guest programmed before is not what a new process should get.
    void clear() { bytes_.clear(); }
    size_t size() const { return bytes_.size(); }  // bytes held
    bool empty() const { return bytes_.empty(); }

    using Writer = std::function<Result<void>(uint32_t offset, std::span<const uint8_t> bytes)>;
    // Calls `write` for each run of bytes that one guest write left (split at dword boundaries,
    // as config accesses are), oldest write first; stops at the first error and returns it.
    Result<void> replay(const Writer& write) const;

  private:
    struct Byte {
        uint64_t seq = 0;  // which write left it
        uint8_t value = 0;
    };
    std::map<uint32_t, Byte> bytes_;
    uint64_t seq_ = 0;
};

}  // namespace potemkin::hostdev

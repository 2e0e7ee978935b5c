// Test fakes for front-ends (PCI_FRONT, GENERIC, the host link): a HostDevice that records
// what it is asked and answers from a FakeHostState the test owns, and a transport that opens
// it and keeps the OpenContext it was given. The VM services come with it (vm_fakes.hpp).
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "hostdev/host_device.hpp"
#include "vm_fakes.hpp"

namespace potemkin::testing {

struct ConfigAccess {
    uint32_t offset;
    std::vector<uint8_t> bytes;
    bool operator==(const ConfigAccess&) const = default;
};

struct RegionAccess {
    bool is_write;
    uint32_t index;
    uint64_t offset;
    std::vector<uint8_t> bytes;  // written bytes; for reads, what was answered (0s if failed)
};

// What the fake host device saw and how it answers. Outlives the device, so tests can look
// after teardown.
struct FakeHostState {
    // Config space (empty: every config access fails) and region infos (index = position).
    std::vector<uint8_t> config;
    std::vector<hostdev::RegionInfo> regions = default_regions();
    uint32_t num_irqs = 1;
    // Region contents: `bytes` (filled by writes when store_writes) or else `pattern`.
    std::map<std::pair<uint32_t, uint64_t>, uint8_t> bytes;
    std::function<uint8_t(uint32_t, uint64_t)> pattern = [](uint32_t, uint64_t) {
        return uint8_t{0};
    };
    bool store_writes = true;

    // Every region access in order; region_reads / region_writes: the successful ones.
    std::vector<RegionAccess> accesses, region_reads, region_writes;
    std::vector<ConfigAccess> config_writes, config_reads;  // config_reads: after `opened`
    std::vector<std::pair<hostdev::IrqKind, uint32_t>> irqs;

    bool fail_reads = false;   // region reads
    bool fail_writes = false;  // region writes
    bool fail_config_reads_after_open = false;
    bool fail_acks = false;
    bool opened = false;  // set by the test once the device is up (config_reads count then)
    int opens = 0;
    int closes = 0;
    int destroyed = 0;
    int acks = 0;    // ack_intx() calls
    int resets = 0;  // reset() calls
    std::function<void()> on_ack;

    // What the transport was given at open.
    std::string url;
    hostdev::HostDeviceEvents* events = nullptr;
    hostdev::OpenContext open_context;

    static std::vector<hostdev::RegionInfo> default_regions() {
        std::vector<hostdev::RegionInfo> r(10);
        for (uint32_t i = 0; i < r.size(); ++i) r[i].index = i;
        return r;
    }
    bool wrote_config(uint32_t offset, std::vector<uint8_t> b) const {
        return std::find(config_writes.begin(), config_writes.end(),
                         ConfigAccess{offset, std::move(b)}) != config_writes.end();
    }
    bool config_written_in(uint32_t begin, uint32_t end) const {
        for (const auto& w : config_writes)
            if (w.offset < end && begin < w.offset + w.bytes.size()) return true;
        return false;
    }
};

class FakeHostDevice final : public hostdev::HostDevice {
  public:
    explicit FakeHostDevice(FakeHostState& s) : s_(s) {}
    ~FakeHostDevice() override { ++s_.destroyed; }

    Result<hostdev::DeviceInfo> info() override {
        return hostdev::DeviceInfo{.name = "fake",
                                   .num_regions = static_cast<uint32_t>(s_.regions.size()),
                                   .num_irqs = s_.num_irqs};
    }
    Result<hostdev::RegionInfo> region_info(uint32_t index) override {
        if (index >= s_.regions.size()) return failf("no region {}", index);
        return s_.regions[index];
    }
    Result<void> config_read(uint32_t offset, std::span<uint8_t> out) override {
        if (s_.fail_config_reads_after_open && s_.opened) return fail("config read failed");
        if (offset + out.size() > s_.config.size()) return fail("config read out of range");
        std::copy_n(s_.config.begin() + offset, out.size(), out.begin());
        if (s_.opened) s_.config_reads.push_back({offset, {out.begin(), out.end()}});
        return ok();
    }
    Result<void> config_write(uint32_t offset, std::span<const uint8_t> in) override {
        s_.config_writes.push_back({offset, {in.begin(), in.end()}});
        return ok();
    }
    Result<void> region_read(uint32_t index, uint64_t offset, std::span<uint8_t> out) override {
        s_.accesses.push_back({false, index, offset, std::vector<uint8_t>(out.size())});
        if (s_.fail_reads) return fail("region read failed: connection reset");
        for (size_t k = 0; k < out.size(); ++k) {
            auto it = s_.bytes.find({index, offset + k});
            out[k] = it == s_.bytes.end() ? s_.pattern(index, offset + k) : it->second;
        }
        s_.accesses.back().bytes.assign(out.begin(), out.end());
        s_.region_reads.push_back(s_.accesses.back());
        return ok();
    }
    Result<void> region_write(uint32_t index, uint64_t offset,
                              std::span<const uint8_t> in) override {
        s_.accesses.push_back({true, index, offset, {in.begin(), in.end()}});
        if (s_.fail_writes) return fail("region write failed: connection reset");
        if (s_.store_writes)
            for (size_t k = 0; k < in.size(); ++k) s_.bytes[{index, offset + k}] = in[k];
        s_.region_writes.push_back(s_.accesses.back());
        return ok();
    }
    Result<void> set_irqs(hostdev::IrqKind kind, uint32_t count) override {
        s_.irqs.emplace_back(kind, count);
        return ok();
    }
    Result<void> ack_intx() override {
        ++s_.acks;
        if (s_.on_ack) s_.on_ack();
        if (s_.fail_acks) return fail("ack failed: connection reset");
        return ok();
    }
    Result<void> reset() override {
        ++s_.resets;
        return ok();
    }
    void close() override { ++s_.closes; }

  private:
    FakeHostState& s_;
};

// Registers `scheme` in `registry`: opening "scheme:PATH" records the URL and the OpenContext
// in `state` and gives a FakeHostDevice. `path`, when not empty, is the only path that opens.
inline Result<void> add_fake_transport(hostdev::TransportRegistry& registry, FakeHostState& state,
                                       std::string scheme = "fake", std::string path = "") {
    return registry.add(
        std::move(scheme),
        [&state, path](const hostdev::ParsedUrl& url, const hostdev::OpenContext& oc)
            -> Result<std::unique_ptr<hostdev::HostDevice>> {
            if (!path.empty() && url.path != path) return failf("no fake device '{}'", url.path);
            ++state.opens;
            state.url = url.text;
            state.events = oc.events;
            state.open_context = oc;
            return std::unique_ptr<hostdev::HostDevice>(new FakeHostDevice(state));
        });
}

}  // namespace potemkin::testing

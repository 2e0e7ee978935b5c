#include "pci/host_bridge.hpp"

#include "pci/header.hpp"

namespace potemkin::pci {

namespace {
Result<ConfigSpace> host_bridge_space() {
    return make_type0_header({.vendor_id = kHostBridgeVendorId,
                              .device_id = kHostBridgeDeviceId,
                              .class_code = kHostBridgeClassCode,
                              .revision_id = kHostBridgeRevision});
}
}  // namespace

Result<std::unique_ptr<HostBridge>> HostBridge::create(std::string name) {
    auto cs = host_bridge_space();
    if (!cs) return fail(cs.error().context(name));
    return std::unique_ptr<HostBridge>(new HostBridge(std::move(name), std::move(*cs)));
}

uint32_t HostBridge::config_read(uint32_t offset, unsigned size) {
    return cs_.read(offset, size);
}

ConfigWriteResult HostBridge::config_write(uint32_t offset, unsigned size, uint32_t value) {
    // No BARs: the diff is always empty, but going through write_config keeps one write path.
    return write_config(cs_, BarLayout{}, offset, size, value);
}

vm::BusHandler HostBridge::bar_handler(int) {
    // Never called: the host bridge decodes nothing. Answer as unassigned space would.
    return {[](uint64_t, unsigned) { return ~0ull; }, [](uint64_t, unsigned, uint64_t) {}};
}

void HostBridge::reset() {
    if (auto cs = host_bridge_space()) cs_ = std::move(*cs);
}

}  // namespace potemkin::pci

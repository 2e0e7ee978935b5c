// The "vfio:" URL: path = the device ("0000:00:03.0", "00:03.0" or a sysfs path ending in one);
// parameters sysfs_root=DIR and dev_root=DIR (where sysfs and /dev are; tests point them at a
// fake tree), mmap=0|1 (offer the BARs for direct mapping; default 1). Registered with the
// transport registry.
#include "vfio/client.hpp"

namespace potemkin::vfio {

Result<void> register_vfio_transport(hostdev::TransportRegistry& transports) {
    return transports.add(
        "vfio",
        [](const hostdev::ParsedUrl& url,
           const hostdev::OpenContext& ctx) -> Result<std::unique_ptr<hostdev::HostDevice>> {
            VfioClientSettings s;
            s.device = url.path;
            for (const auto& [key, value] : url.params) {
                if (value.empty()) return failf("parameter {} is empty", key);
                if (key == "sysfs_root")
                    s.sysfs_root = value;
                else if (key == "dev_root")
                    s.dev_root = value;
                else if (key == "mmap" && (value == "0" || value == "1"))
                    s.mmap = value == "1";
                else if (key == "mmap")
                    return failf("parameter mmap='{}' is not 0 or 1", value);
                else
                    return failf("unknown parameter '{}' (known: sysfs_root, dev_root, mmap)", key);
            }
            s.events = ctx.events;
            s.memory = ctx.memory;
            s.post = ctx.post;
            s.external_source = ctx.external_source;
            POTEMKIN_TRY_ASSIGN(auto c, VfioClient::open(std::move(s)));
            return std::unique_ptr<hostdev::HostDevice>(std::move(c));
        });
}

}  // namespace potemkin::vfio

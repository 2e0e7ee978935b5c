// The "vfio-user:" URL: path = the server's socket; parameters timeout_ms=N (reply timeout,
// default 5000) and the switches reconnect, posted_writes, twin_socket, ioeventfds, fastpath
// (0|1, default 1; docs/vfio-user.md, "URL"; docs/fast-path.md). Registered with the transport
// registry.
#include <charconv>

#include "vfio_user/client.hpp"

namespace potemkin::vfio_user {

Result<void> register_vfio_user_transport(hostdev::TransportRegistry& transports) {
    return transports.add(
        "vfio-user",
        [](const hostdev::ParsedUrl& url,
           const hostdev::OpenContext& ctx) -> Result<std::unique_ptr<hostdev::HostDevice>> {
            VfioUserClientSettings s;
            s.socket_path = url.path;
            s.label = "vfio-user:" + url.path;  // parameters would only clutter messages
            for (const auto& [key, value] : url.params) {
                uint64_t n = 0;
                const auto [end, ec] =
                    std::from_chars(value.data(), value.data() + value.size(), n);
                const bool numeric = ec == std::errc() && end == value.data() + value.size();
                if (key == "timeout_ms") {
                    if (!numeric || n == 0 || n > 3'600'000)
                        return failf(
                            "parameter timeout_ms='{}' is not a number of milliseconds "
                            "from 1 to 3600000",
                            value);
                    s.timeout = std::chrono::milliseconds(n);
                } else if (bool* flag = key == "reconnect"       ? &s.reconnect
                                        : key == "posted_writes" ? &s.posted_writes
                                        : key == "twin_socket"   ? &s.twin_socket
                                        : key == "ioeventfds"    ? &s.ioeventfds
                                        : key == "fastpath"      ? &s.fast_path
                                                                 : nullptr) {
                    if (!numeric || n > 1)
                        return failf("parameter {}='{}' is not 0 or 1", key, value);
                    *flag = n == 1;
                } else {
                    return failf(
                        "unknown parameter '{}' (known: timeout_ms, reconnect, posted_writes, "
                        "twin_socket, ioeventfds, fastpath)",
                        key);
                }
            }
            s.events = ctx.events;
            s.memory = ctx.memory;
            s.post = ctx.post;
            s.external_source = ctx.external_source;
            POTEMKIN_TRY_ASSIGN(auto c, VfioUserClient::open(std::move(s)));
            return std::unique_ptr<hostdev::HostDevice>(std::move(c));
        });
}

}  // namespace potemkin::vfio_user

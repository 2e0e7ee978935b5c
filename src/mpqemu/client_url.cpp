// The "mpqemu-fd:N" and "qemu:DEVICE[,k=v...]" URLs (docs/interop.md) and their registration:
// parameters, the QEMU launch, respawn.
#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <filesystem>
#include <optional>

#include "mpqemu/client.hpp"
#include "mpqemu/qemu_process.hpp"

namespace potemkin::mpqemu {

Result<QemuDeviceSpec> parse_qemu_device(std::string_view path) {
    QemuDeviceSpec spec;
    size_t start = 0;
    bool first = true;
    while (start <= path.size()) {
        const size_t comma = path.find(',', start);
        const std::string_view item = path.substr(
            start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
        if (first) {
            if (item.empty()) return failf("no device name before the first ','");
            if (item.find('=') != std::string_view::npos)
                return failf("'{}' is not a device name (expected e.g. qemu:nvme,...)", item);
            spec.device = std::string(item);
            first = false;
        } else {
            const size_t eq = item.find('=');
            if (item.empty()) return failf("an empty device property (stray ',')");
            if (eq == std::string_view::npos || eq == 0)
                return failf("device property '{}' is not of the form key=value", item);
            std::string key(item.substr(0, eq));
            std::string value(item.substr(eq + 1));
            if (key == "id" || key == "bus" || key == "addr")
                return failf("device property '{}' is set by potemkin", key);
            if (key == "drive") {
                if (value.empty()) return failf("drive= needs a raw image path");
                if (!spec.drive.empty()) return failf("drive= is given twice");
                spec.drive = std::move(value);
            } else {
                for (const auto& [k, v] : spec.props)
                    if (k == key) return failf("device property '{}' is given twice", key);
                spec.props.emplace_back(std::move(key), std::move(value));
            }
        }
        if (comma == std::string_view::npos) break;
        start = comma + 1;
    }
    return spec;
}

namespace {

Result<uint64_t> number_param(const std::string& key, const std::string& value, uint64_t max) {
    uint64_t n = 0;
    int base = 10;
    std::string_view v = value;
    if (v.size() > 2 && v[0] == '0' && (v[1] == 'x' || v[1] == 'X')) {
        v.remove_prefix(2);
        base = 16;
    }
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n, base);
    if (ec != std::errc() || end != v.data() + v.size() || n > max)
        return failf("parameter {}='{}' is not a number up to {}", key, value, max);
    return n;
}

struct CommonParams {
    std::chrono::milliseconds timeout{5000};
    std::optional<uint64_t> mem_base;
    std::optional<uint32_t> io_base;
};

// Parameters both schemes take; `extra` lists the scheme's own (handled by the caller).
Result<CommonParams> common_params(const hostdev::ParsedUrl& url,
                                   std::initializer_list<const char*> extra) {
    CommonParams c;
    for (const auto& [key, value] : url.params) {
        if (key == "timeout_ms") {
            auto n = number_param(key, value, 3'600'000);
            if (!n) return fail(n.error());
            if (*n == 0) return failf("parameter timeout_ms must be positive");
            c.timeout = std::chrono::milliseconds(*n);
        } else if (key == "bar_base") {
            auto n = number_param(key, value, ~0ull);
            if (!n) return fail(n.error());
            c.mem_base = *n;
        } else if (key == "io_base") {
            auto n = number_param(key, value, 0xFFFF);
            if (!n) return fail(n.error());
            c.io_base = static_cast<uint32_t>(*n);
        } else if (std::find_if(extra.begin(), extra.end(),
                                [&key = key](const char* e) { return key == e; }) == extra.end()) {
            std::string known = "timeout_ms, bar_base, io_base";
            for (const char* e : extra) known += fmt::format(", {}", e);
            return failf("unknown parameter '{}' (known: {})", key, known);
        }
    }
    return c;
}

void apply(MpqemuClientSettings& s, const CommonParams& c, const hostdev::OpenContext& ctx) {
    s.timeout = c.timeout;
    if (c.mem_base) s.mem_base = *c.mem_base;
    if (c.io_base) s.io_base = *c.io_base;
    s.events = ctx.events;
    s.memory = ctx.memory;
    s.post = ctx.post;
    s.external_source = ctx.external_source;
}

}  // namespace

Result<void> register_mpqemu_transports(hostdev::TransportRegistry& transports) {
    POTEMKIN_TRY(transports.add(
        "mpqemu-fd",
        [](const hostdev::ParsedUrl& url,
           const hostdev::OpenContext& ctx) -> Result<std::unique_ptr<hostdev::HostDevice>> {
            auto fd = number_param("fd", url.path, 1'000'000);
            if (!fd) return failf("'{}' is not a file descriptor number", url.path);
            auto c = common_params(url, {});
            if (!c) return fail(c.error());
            MpqemuClientSettings s;
            s.label = "mpqemu-fd:" + url.path;  // parameters would only clutter messages
            // Taken over: a dup, so the number the caller gave stays theirs to close.
            const int dup = ::fcntl(static_cast<int>(*fd), F_DUPFD_CLOEXEC, 3);
            if (dup < 0) return failf(Errno{errno}, "fd {}", *fd);
            s.socket = UniqueFd(dup);
            apply(s, *c, ctx);
            POTEMKIN_TRY_ASSIGN(auto client, MpqemuClient::open(std::move(s)));
            return std::unique_ptr<hostdev::HostDevice>(std::move(client));
        }));
    return transports.add(
        "qemu",
        [](const hostdev::ParsedUrl& url,
           const hostdev::OpenContext& ctx) -> Result<std::unique_ptr<hostdev::HostDevice>> {
            auto spec = parse_qemu_device(url.path);
            if (!spec) return fail(spec.error());
            auto c = common_params(url, {"qemu", "start_timeout_ms", "respawn"});
            if (!c) return fail(c.error());
            QemuLaunchSettings q;
            q.label = "qemu:" + url.path;  // parameters would only clutter messages
            q.device = spec->device;
            q.device_props = spec->props;
            if (const auto* bin = url.param("qemu")) q.binary = *bin;
            if (const auto* t = url.param("start_timeout_ms")) {
                auto n = number_param("start_timeout_ms", *t, 3'600'000);
                if (!n) return fail(n.error());
                q.timeout = std::chrono::milliseconds(*n);
            }
            if (!spec->drive.empty()) {
                // A <file> id from the VM configuration, or a path.
                const std::string* named = ctx.file(spec->drive);
                std::filesystem::path p(named ? *named : spec->drive);
                if (p.is_relative() && !ctx.base_dir.empty()) p = ctx.base_dir / p;
                std::error_code ec;
                p = std::filesystem::absolute(p, ec);
                if (!std::filesystem::is_regular_file(p, ec))
                    return failf("drive '{}' ({}) is not a regular file", spec->drive, p.string());
                q.drive = p.string();
            }
            bool respawn = false;
            if (const auto* v = url.param("respawn")) {
                if (*v != "0" && *v != "1")
                    return failf("parameter respawn='{}' is not 0 or 1", *v);
                respawn = *v == "1";
            }
            UniqueFd sock;
            auto proc = QemuProcess::launch(q, sock);
            if (!proc) return fail(proc.error());
            MpqemuClientSettings s;
            s.label = q.label;
            s.socket = std::move(sock);
            s.process = std::move(*proc);
            apply(s, *c, ctx);
            if (respawn) {
                s.respawn = [q]() -> Result<std::pair<UniqueFd, std::unique_ptr<QemuProcess>>> {
                    UniqueFd fresh;
                    auto p = QemuProcess::launch(q, fresh);
                    if (!p) return fail(p.error());
                    return std::make_pair(std::move(fresh), std::move(*p));
                };
            }
            POTEMKIN_TRY_ASSIGN(auto client, MpqemuClient::open(std::move(s)));
            return std::unique_ptr<hostdev::HostDevice>(std::move(client));
        });
}

}  // namespace potemkin::mpqemu

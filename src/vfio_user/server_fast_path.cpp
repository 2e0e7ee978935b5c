// VfioUserServer, the fast path's server side (vfio_user/fast_path.hpp, docs/fast-path.md):
// agreeing to it in VERSION and serving the accesses a client queues in the shared area. The
// accesses reach the ModelServer exactly as REGION_READ/REGION_WRITE do, on the serving thread,
// so models need no change. When to poll and when to sleep is server.cpp's serve loop.
#include <cerrno>

#include "common/eventfd.hpp"
#include "common/log.hpp"
#include "vfio_user/server_internal.hpp"

namespace potemkin::vfio_user {

namespace {
// The area memfd, the kick and the answer eventfds.
constexpr uint32_t kFastPathFds = 3;
}  // namespace

void VfioUserServer::offer_fast_path(Connection& conn, Capabilities& mine, std::vector<int>& fds) {
    if (!settings_.fast_path || conn.client.fast_path_version != fast_path::kVersion) return;
    if (conn.client.max_msg_fds < fds.size() + kFastPathFds) {
        log::info("{}: the client asked for the fast path but takes {} fds; plain vfio-user",
                  settings_.label, conn.client.max_msg_fds);
        return;
    }
    auto area = fast_path::Area::create();
    auto kick = make_eventfd();
    auto answer = make_eventfd();
    if (!area || !kick || !answer) {
        const Error& e = !area ? area.error() : !kick ? kick.error() : answer.error();
        log::warn("{}: no fast path: {}", settings_.label, e.message);
        return;
    }
    uint8_t* base = area->base();
    conn.fast.reset(new Connection::FastPath{std::move(*area), fast_path::ServerQueue(base),
                                             std::move(*kick), std::move(*answer)});
    mine.fast_path_version = fast_path::kVersion;
    mine.fast_path_fd_index = static_cast<uint32_t>(fds.size());
    fds.push_back(conn.fast->area.fd());
    fds.push_back(conn.fast->kick.get());
    fds.push_back(conn.fast->answer.get());
    ++stats_.fast_path_connections;
    log::info("{}: fast path agreed (poll {} us after the last access)", settings_.label,
              settings_.poll_us);
}

int VfioUserServer::fast_access(const fast_path::Access& a, std::span<uint8_t> out) {
    const bool write = a.op != fast_path::Op::read;
    const char* name = write ? "fast-path write" : "fast-path read";
    if (auto r = check_region_access(name, a.region, a.offset, a.size); !r) {
        log::warn("{}: {}", settings_.label, r.error().message);
        return EINVAL;
    }
    auto r = write ? server_->region_write(a.region, a.offset, std::span(a.data).first(a.size))
                   : server_->region_read(a.region, a.offset, out.first(a.size));
    if (!r) {
        log::warn("{}: {} of region {} at {:#x}: {}", settings_.label, name, a.region, a.offset,
                  r.error().message);
        return EINVAL;
    }
    return 0;
}

bool VfioUserServer::serve_fast_path(Connection& conn) {
    auto& fp = *conn.fast;
    bool any = false;
    std::array<uint8_t, fast_path::kMaxData> data{};
    for (;;) {
        auto next = fp.queue.next();
        if (!next) {
            log::warn("{}: dropping the client: {}", settings_.label, next.error().message);
            conn.close = true;
            return any;
        }
        if (!next->present) return any;
        any = true;
        ++stats_.fast_path_accesses;
        int status = EINVAL;
        if (next->invalid)
            log::warn("{}: fast path: access {} has a bad op or size ({} bytes)", settings_.label,
                      next->ticket, next->access.size);
        else
            status = fast_access(next->access, data);
        if (status != 0) ++stats_.fast_path_errors;
        const bool read = !next->invalid && next->access.op == fast_path::Op::read;
        const auto answer = read && status == 0
                                ? std::span<const uint8_t>(data).first(next->access.size)
                                : std::span<const uint8_t>();
        if (fp.queue.complete(next->ticket, status, answer))
            sdk::signal_client_eventfd(fp.answer.get(), settings_.label, "fast-path answer",
                                       fp.signal_failures);
        // As after a reply: the model's deferred work (its DMA) now, at top level.
        server_->run_deferred();
    }
}

}  // namespace potemkin::vfio_user

// Shared by the files of vfio_user::VfioUserServer, one per concern: server.cpp (setup, serve
// loop, dispatch, VERSION), server_dma.cpp (DMA_MAP/UNMAP and the model's DMA, by memory or
// by message), server_regions.cpp (device and region info, region access, reset),
// server_irqs.cpp (interrupts). Not part of the server's API.
#pragma once

#include <fmt/format.h>

#include <cerrno>
#include <cstddef>
#include <memory>
#include <span>
#include <vector>

#include "vfio_user/server.hpp"

namespace potemkin::vfio_user::server_detail {

// The most DMA regions one client may map: generous for a VM's RAM layout, small enough that a
// hostile client cannot make the server allocate without bound. Offered as max_dma_maps in
// VERSION, so no more than QEMU's client accepts (VFIO_USER_DEF_MAP_MAX, 65535: a larger offer
// makes QEMU >= 10.1 refuse the device).
constexpr size_t kMaxDmaRegions = 65535;

template <typename... Args>
Unexpected<Error> invalid(fmt::format_string<Args...> f, Args&&... args) {
    return fail(fmt::format(f, std::forward<Args>(args)...), EINVAL);
}

inline Result<void> no_fds(const Message& msg) {
    if (!msg.fds.empty())
        return invalid("{}: carries {} fds, takes none", command_name(msg.header.cmd),
                       msg.fds.size());
    return ok();
}

inline std::span<const uint8_t> bytes_of(const std::vector<uint8_t>& v) {
    return std::span<const uint8_t>(v.data(), v.size());
}

}  // namespace potemkin::vfio_user::server_detail

namespace potemkin::vfio_user {

struct VfioUserServer::Connection {
    UniqueFd fd;
    MessageReader reader;  // every read of fd goes through it
    Message rx;            // the request being handled (reused: no allocation per request)
    bool negotiated = false;
    bool close = false;  // drop the connection after this message
    Capabilities client;
    // How our DMA_READ/DMA_WRITE are laid out for this client (chosen at VERSION).
    DmaLayout dma_layout = DmaLayout::spec;
    // The twin socket (VERSION "twin_socket"): our DMA_READ/DMA_WRITE requests and the
    // client's replies travel on it; absent, they share fd with the client's requests.
    UniqueFd twin;
    MessageReader twin_reader;
    // Whether we told this client that message DMA inside a request deadlocks QEMU.
    bool warned_dma_in_request = false;
    // The fast path, when agreed in VERSION (server_fast_path.cpp).
    struct FastPath {
        fast_path::Area area;
        fast_path::ServerQueue queue;
        UniqueFd kick;         // the client writes it when it finds us asleep
        UniqueFd answer;       // we write it when the client blocks on an answer
        bool watched = false;  // kick is in the connection's wait set
        uint64_t signal_failures = 0;
    };
    std::unique_ptr<FastPath> fast;
};

}  // namespace potemkin::vfio_user

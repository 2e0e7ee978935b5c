// The vfio-user client: hostdev transport "vfio-user:/path/to/socket[?k=v...]" (docs/vfio-user.md,
// "Client"). The VMM side of the protocol as libvfio-user 0.2 speaks it
// (../shared/protocols/vfio-user.md): a device server listens on an AF_UNIX socket, this client
// connects, negotiates, maps guest RAM into the server (the memfd, zero-copy), and forwards the
// front-end's config, region, interrupt and reset calls as messages.
//
// Writes: BAR writes are posted (NO_REPLY, the guest does not wait) unless the device has a
// mappable BAR or posted_writes is off; a write matching an ioeventfd the server offered is an
// eventfd write. Reads and config accesses wait, ordered behind the posted writes on the one
// stream (docs/vfio-user.md, "Posted writes", "Ioeventfds").
//
// Threading. Every HostDevice call comes from one thread (the VM's engine thread). A background
// thread, the remote link's "poll thread" (hostdev/remote_link.hpp, shared with the mpqemu
// client), watches the interrupt eventfds, the idle socket and the twin socket (the server's
// DMA_READ/DMA_WRITE, which it may send at any time; hang-ups) and, while the server is gone,
// the socket path. It never calls
// HostDeviceEvents itself: what it finds goes into an inbox that runs on the engine thread,
// either through OpenContext::post (the machine's post) or, without one, at the start of the
// next HostDevice call. Interrupts raised while a request is in flight are collected on the
// engine thread right after the reply (every request but REGION_READ, which stays at one
// sendmsg and one recvmsg), so a guest that triggers an interrupt with a register write sees
// it before its next instruction, as with the in-process transport.
//
// INTx: vfio-user signals assertion only (the trigger eventfd); there is no deassert message, and
// the server auto-masks INTx when it signals. As with VFIO's auto-masked INTx, the line is held
// asserted until ack_intx() (the front-end calls it on the guest's EOI, HostDevice contract);
// then it is dropped and the server is sent SET_IRQS(INTx, ACTION_UNMASK), which makes it
// trigger again, before its reply, if its line is still up. Writes to the device do not lower
// the line: the device's state is resampled at the EOI, not guessed from an access.
//
// Death and reconnection: a closed socket, an I/O error or a timed-out reply marks the server
// gone; every call fails (the front-end reads all-ones and drops writes) and the VM keeps
// running. The poll thread retries the socket path; when a server listens there again the
// connection is rebuilt (VERSION, DMA maps, IRQ eventfds, the config writes the guest made) and
// calls work again.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "hostdev/host_device.hpp"
#include "hostdev/remote_client.hpp"
#include "vm/guest_memory.hpp"

namespace potemkin::vfio_user {

// label defaults to "vfio-user:" + socket_path; timeout is per reply and for connect; memory is
// guest RAM to DMA_MAP with its memfd (null: nothing mapped, DMA_READ/DMA_WRITE only).
struct VfioUserClientSettings : hostdev::RemoteClientSettings {
    std::string socket_path;
    std::chrono::milliseconds reconnect_interval{200};  // between attempts while gone
    // Off: a lost server stays lost, and HostDeviceEvents::disconnected() is sent. On (the
    // default): disconnected() is sent too (saying a reconnect is coming), the client
    // reconnects, and HostDeviceEvents::reconnected() follows.
    bool reconnect = true;
    // BAR writes go out with NO_REPLY and the guest does not wait for them (PCI's posted
    // memory writes); reads and config accesses still wait, and the one stream keeps them
    // ordered after the writes. Off: every write waits for its reply.
    bool posted_writes = true;
    // Offer twin_socket in VERSION: a server that takes it sends its own requests (DMA) on a
    // second socket, served by the poll thread and, while a reply is awaited, by the waiting
    // thread. Off: they come on the main socket (served all the same).
    bool twin_socket = true;
    // Ask the server for ioeventfds (DEVICE_GET_REGION_IO_FDS) of every BAR; a guest write that
    // matches one becomes an eventfd write instead of a message.
    bool ioeventfds = true;
    // Offer potemkin's shared-memory fast path in VERSION (docs/fast-path.md): with a server
    // that takes it, region accesses of up to 32 bytes go through a shared queue instead of
    // messages (and ioeventfds are not used: the queue is cheaper and keeps the order). A
    // server that does not offer it (QEMU's, libvfio-user's, `potemkin serve --no-fast-path`)
    // is spoken to in plain vfio-user.
    bool fast_path = true;
};

// What became of the guest's writes and the server's requests (tests, probe, bench).
struct VfioUserStats {
    hostdev::PostedWriteStats posted;  // posted BAR writes (sent, lost sending, dropped)
    uint64_t ioeventfd_writes = 0;     // guest writes that became an eventfd write
    uint64_t ioeventfds = 0;           // ioeventfds the server offered on this connection
    uint64_t server_requests = 0;      // DMA_READ/DMA_WRITE served
    bool twin_socket = false;          // the server's requests come on a twin socket
    bool fast_path = false;            // this connection uses the fast path
    uint64_t fast_path_accesses = 0;   // region accesses that went through the shared queue
    uint64_t fast_path_kicks = 0;      // of those, ones that found the server asleep
    uint64_t fast_path_blocks = 0;     // waits that ended up blocking on the answer eventfd
};

// What VERSION settled (docs/vfio-user.md).
struct VfioUserCaps {
    uint16_t major = 0;
    uint16_t minor = 0;
    uint32_t max_msg_fds = 1;                // server default when absent
    uint64_t max_data_xfer_size = 1u << 20;  // server default when absent
    uint64_t pgsizes = 4096;                 // DMA page sizes the server accepts
    uint32_t max_dma_maps = 65535;
};

// The HostDevice calls are hostdev::RemoteClient's; the requests they become, client.cpp's.
class VfioUserClient final : public hostdev::RemoteClient {
  public:
    // Connects, negotiates and sets the device up (DMA maps, INTx eventfd). Errors name the
    // label and what failed.
    static Result<std::unique_ptr<VfioUserClient>> open(VfioUserClientSettings settings);

    // ---- Introspection (tests, probe) ------------------------------------------------------
    VfioUserCaps caps() const;
    uint64_t reconnects() const;
    VfioUserStats stats() const;

    class Impl;  // shared with the poll thread; client_impl.hpp

  private:
    explicit VfioUserClient(std::shared_ptr<Impl> impl);
    Impl* impl_;  // owned by RemoteClient
};

// Register scheme "vfio-user": path = the socket; parameters timeout_ms=N (reply timeout,
// default 5000), reconnect=0|1, posted_writes=0|1, twin_socket=0|1, ioeventfds=0|1,
// fastpath=0|1 (all default 1).
Result<void> register_vfio_user_transport(hostdev::TransportRegistry& transports);

}  // namespace potemkin::vfio_user

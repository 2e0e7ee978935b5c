// vfio-user benchmark (issue: out-of-process devices). In one run:
//  1. the floor: two processes exchanging REGION_READ-shaped vfio-user messages over AF_UNIX
//     the way any peer must (a 32-byte request: header + region access struct; a 36-byte reply:
//     header + struct + 4 data bytes; recvmsg with room for fds, the header parsed for the
//     message size and the msg_id checked), but nothing else: no model, no validation;
//  2. potemkin's client → `potemkin serve edu` REGION_READ of 4 bytes (fastpath=0: messages);
//     1 and 2 run in alternating blocks (which one goes first alternates too), so that both
//     see the same machine load; p50, p99 and mean of each, their ratios, and the median over
//     block pairs of the ratio of block medians (the figure least moved by load changes);
//  3. a guest loop reading edu's liveness register through PCI_FRONT, over vfio-user and over
//     inproc, ns per access;
//  4. the cost of a guest write to a BAR over vfio-user as the guest sees it (the client's
//     region_write), three ways side by side in alternating blocks against `potemkin serve
//     multibar`: blocking (posted_writes=0: REGION_WRITE and its reply), posted (REGION_WRITE
//     with NO_REPLY) and a doorbell (the register multibar declares: an ioeventfd write). After
//     each block one untimed read drains what the device has queued, so a block does not pay
//     for the previous one's backlog;
//  5. DMA bandwidth into guest RAM through a second MAP_SHARED mapping of its memfd (what a
//     server does after DMA_MAP), next to memcpy into private memory;
//  6. the fast path (docs/fast-path.md), all in alternating blocks: the shared-memory spin
//     floor (two processes answering each other through one cache line of a shared memfd),
//     a 4-byte register read and write through the client over standard vfio-user
//     (fastpath=0), over the fast path while the server polls, and over the fast path after
//     the server went to sleep (each access after a pause longer than the poll window); p50
//     and p99. Then guest register read and write loops (ns per access) over inproc, standard
//     vfio-user and the fast path, and the CPU time the fast-path server burns per second
//     while its client is idle (after the poll window), from /proc/PID/schedstat.
//
// Usage: see kUsage below (--help).
#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <numeric>
#include <string_view>
#include <thread>
#include <vector>

#include "bench_runner.hpp"
#include "bench_util.hpp"
#include "flat_elf.hpp"
#include "hostdev/host_device.hpp"
#include "machine/builtins.hpp"
#include "machine/machine.hpp"
#include "pci/pci_bus.hpp"
#include "server_process.hpp"
#include "vfio_user/client.hpp"
#include "vfio_user/fast_path.hpp"

using namespace potemkin;
using bench::Clock;
using bench::Latency;
using bench::summarize;

namespace {

constexpr const char* kUsage =
    R"(usage: bench_vfio_user [N] [--only PART] [--pin | --pin-same] [--poll-us N] [--help]
  N             round trips (accesses, writes) per figure; default 50000
  --only PART   run one part:
                  rtt     the floor and the client's REGION_READ, side by side
                  floor   only the floor's side, N round trips (for strace -c -f; divide by N)
                  client  only the client's side, N round trips (likewise)
                  guest   one guest run reading edu over vfio-user, N accesses
                  writes  guest-write cost: blocking vs posted vs ioeventfd doorbell
                  fast    the fast path: spin floor, standard vs fast (polling, asleep),
                          guest loops, server CPU while idle
  --poll-us N   the fast-path server's poll window (potemkin serve --poll-us); default 50
  --pin         the client on one CPU, the device processes on another
  --pin-same    the client and the device processes all on one CPU
  --help        this text
)";

// A system call the measurement depends on failed.
[[noreturn]] void die(const char* what) {
    std::fprintf(stderr, "bench: %s: %s\n", what, std::strerror(errno));
    std::exit(1);
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

// The wire layout of a vfio-user header (16 bytes) and of REGION_READ's struct (16 bytes),
// written out by hand: the floor must not share potemkin's code.
constexpr size_t kHeader = 16, kAccess = 16;
constexpr uint16_t kRegionRead = 9;

void put_header(uint8_t* p, uint16_t id, uint16_t cmd, uint32_t size, uint32_t flags) {
    std::memset(p, 0, kHeader);
    std::memcpy(p, &id, 2);
    std::memcpy(p + 2, &cmd, 2);
    std::memcpy(p + 4, &size, 4);
    std::memcpy(p + 8, &flags, 4);
}

// A peer's receive side: one recvmsg per call, with room for SCM_RIGHTS fds as a vfio-user
// peer must leave, buffering across calls, until one whole message (its size from the header)
// is there. A split message or two messages in one read both work.
class StreamIn {
  public:
    // Size of the next whole message at data(), or 0 on EOF, error or a bad size.
    size_t next(int fd) {
        for (;;) {
            if (have_ >= kHeader) {
                uint32_t size;
                std::memcpy(&size, buf_ + 4, 4);
                if (size < kHeader || size > sizeof buf_) return 0;
                if (have_ >= size) return size;
            }
            alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)];
            iovec iov{buf_ + have_, sizeof buf_ - have_};
            msghdr m{};
            m.msg_iov = &iov;
            m.msg_iovlen = 1;
            m.msg_control = control;
            m.msg_controllen = sizeof control;
            const ssize_t n = ::recvmsg(fd, &m, MSG_CMSG_CLOEXEC);
            if (n <= 0) return 0;
            have_ += size_t(n);
        }
    }
    const uint8_t* data() const { return buf_; }
    void consume(size_t size) {
        std::memmove(buf_, buf_ + size, have_ - size);
        have_ -= size;
    }

  private:
    uint8_t buf_[4096];
    size_t have_ = 0;
};

bool send_all(int fd, const uint8_t* p, size_t n) {
    iovec iov{const_cast<uint8_t*>(p), n};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    return ::sendmsg(fd, &m, MSG_NOSIGNAL) == ssize_t(n);
}

// The floor's device side: answers every REGION_READ with `count` bytes after a reply header.
void floor_peer(int fd) {
    StreamIn in;
    uint8_t out[kHeader + kAccess + 64];
    for (;;) {
        const size_t size = in.next(fd);
        if (size < kHeader + kAccess) return;
        uint16_t id, cmd;
        uint32_t count;
        std::memcpy(&id, in.data(), 2);
        std::memcpy(&cmd, in.data() + 2, 2);
        std::memcpy(&count, in.data() + kHeader + 12, 4);
        if (cmd != kRegionRead || count > 64) return;
        const auto reply = uint32_t(kHeader + kAccess + count);
        put_header(out, id, cmd, reply, 1);
        std::memcpy(out + kHeader, in.data() + kHeader, kAccess);
        std::memset(out + kHeader + kAccess, 0x5a, count);
        in.consume(size);
        if (!send_all(fd, out, reply)) return;
    }
}

// The floor: a peer process (this program again, --floor-peer FD) on a socketpair, alive for
// the whole measurement.
class RawPingPong {
  public:
    RawPingPong() {
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) die("socketpair");
        const std::string fd = std::to_string(sv[1]);
        child_ = ::fork();
        if (child_ < 0) die("fork");
        if (child_ == 0) {
            // A fresh program, as `potemkin serve` is: a forked copy of this process measures
            // slower here (its copy-on-write address space, it seems), which is no floor.
            // sv[0] is close-on-exec; sv[1] must survive the exec.
            if (::fcntl(sv[1], F_SETFD, 0) == 0)
                ::execl("/proc/self/exe", "bench_vfio_user", "--floor-peer", fd.c_str(), nullptr);
            ::_exit(127);
        }
        if (::close(sv[1]) != 0) die("close");
        fd_ = sv[0];
    }
    ~RawPingPong() {
        if (::close(fd_) != 0) std::perror("bench: close");
        if (::waitpid(child_, nullptr, 0) != child_) std::perror("bench: waitpid");
    }
    // One REGION_READ of 4 bytes at BAR0 + 4.
    bool round_trip(uint8_t (&data)[4]) {
        uint8_t req[kHeader + kAccess];
        put_header(req, ++id_, kRegionRead, sizeof req, 0);
        const uint64_t offset = 4;
        const uint32_t region = 0, count = 4;
        std::memcpy(req + kHeader, &offset, 8);
        std::memcpy(req + kHeader + 8, &region, 4);
        std::memcpy(req + kHeader + 12, &count, 4);
        if (!send_all(fd_, req, sizeof req)) return false;
        const size_t size = in_.next(fd_);
        uint16_t id;
        std::memcpy(&id, in_.data(), 2);
        if (size != kHeader + kAccess + count || id != id_) return false;
        std::memcpy(data, in_.data() + kHeader + kAccess, count);
        in_.consume(size);
        return true;
    }

  private:
    int fd_ = -1;
    pid_t child_ = -1;
    uint16_t id_ = 0;
    StreamIn in_;
};

class NoGuest final : public hostdev::HostDeviceEvents {
  public:
    void intx(bool) override {}
    void msi(unsigned) override {}
    Result<void> dma_read(uint64_t, std::span<uint8_t>) override { return fail("no guest"); }
    Result<void> dma_write(uint64_t, std::span<const uint8_t>) override { return fail("no guest"); }
    void disconnected(std::string_view) override {}
};

enum class Part { all, rtt, floor, client, guest, writes, fast };

// Where the processes run. Left to the scheduler (the default), the device process (potemkin
// serve, or the floor peer) may land on the client's CPU or not, and on a loaded 2-core VM
// the placements differ by up to 2x from run to run. --pin starts both device processes on one
// CPU and runs the measuring thread (with the client's poll thread, which it starts) on
// another: the same cross-CPU round trip for both, as a VMM and a device process on two cores.
// (Not the default: on this VM a cross-CPU wakeup is at times 5x slower than a same-CPU one.)
class Pinning {
  public:
    // same: client and device processes on one CPU (--pin-same).
    explicit Pinning(bool on, bool same = false) {
        cpu_set_t set;
        CPU_ZERO(&set);
        if (!on || ::sched_getaffinity(0, sizeof set, &set) != 0) return;
        int found = 0;
        for (int c = 0; c < CPU_SETSIZE && found < 2; ++c)
            if (CPU_ISSET(c, &set)) (found++ == 0 ? client_ : device_) = c;
        if (same && found >= 1)
            device_ = client_;
        else if (found < 2)
            client_ = device_ = -1;
    }
    bool on() const { return device_ >= 0; }
    int client_cpu() const { return client_; }
    int device_cpu() const { return device_; }
    // Children started from now on (fork inherits the mask) run on the device CPU.
    void to_device() const { set(device_); }
    // This thread, and threads it starts from now on, run on the client CPU.
    void to_client() const { set(client_); }

  private:
    static void set(int cpu) {
        if (cpu < 0) return;
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        if (::sched_setaffinity(0, sizeof set, &set) != 0)
            std::fprintf(stderr, "bench: pinning to CPU %d: %s (figures are less comparable)\n",
                         cpu, std::strerror(errno));
    }
    int client_ = -1, device_ = -1;
};

struct RoundTrips {
    Latency floor{}, client{};
    double paired = 0;  // median over block pairs of client block p50 / floor block p50
};

// The floor and the client, measured in alternating blocks so that both see the same load on a
// shared machine (one figure measured after the other would compare two moments). The client
// is opened as PCI_FRONT opens it, with guest RAM to DMA_MAP.
RoundTrips floor_and_client(const std::string& url, unsigned n, Part part, const Pinning& pin) {
    NoGuest events;
    auto ram = vm::GuestMemory::create({{Gpa(0), 2u << 20}});
    if (!ram) std::exit(1);
    hostdev::OpenContext ctx{&events};
    ctx.memory = ram->get();
    // The floor peer first: it inherits the device-process CPU (see Pinning), as the server did.
    std::unique_ptr<RawPingPong> raw;
    if (part != Part::client) raw = std::make_unique<RawPingPong>();
    pin.to_client();
    std::unique_ptr<hostdev::HostDevice> dev;
    if (part != Part::floor) {
        auto d = hostdev::TransportRegistry::builtin().open(url, ctx);
        if (!d) {
            std::fprintf(stderr, "bench: %s\n", d.error().message.c_str());
            std::exit(1);
        }
        dev = std::move(*d);
    }
    auto floor_block = [&](unsigned k, std::vector<double>& ns) {
        uint8_t buf[4];
        for (unsigned i = 0; i < k; ++i) {
            auto t0 = Clock::now();
            if (!raw->round_trip(buf)) std::exit(1);
            ns.push_back(bench::ns_since(t0));
        }
    };
    auto client_block = [&](unsigned k, std::vector<double>& ns) {
        uint8_t buf[4];
        for (unsigned i = 0; i < k; ++i) {
            auto t0 = Clock::now();
            if (!dev->region_read(0, 0x04, buf)) std::exit(1);
            ns.push_back(bench::ns_since(t0));
        }
    };
    std::vector<double> warm;
    if (raw) floor_block(500, warm);
    if (dev) client_block(500, warm);

    std::vector<double> floor_ns, client_ns, pairs;
    floor_ns.reserve(n);
    client_ns.reserve(n);
    constexpr unsigned kBlock = 250;
    for (unsigned done = 0, b = 0; done < n; ++b) {
        const unsigned k = std::min(kBlock, n - done);
        std::vector<double> f, c;
        if (b % 2 == 0) {
            if (raw) floor_block(k, f);
            if (dev) client_block(k, c);
        } else {
            if (dev) client_block(k, c);
            if (raw) floor_block(k, f);
        }
        if (raw && dev) pairs.push_back(median(c) / median(f));
        floor_ns.insert(floor_ns.end(), f.begin(), f.end());
        client_ns.insert(client_ns.end(), c.begin(), c.end());
        done += k;
    }
    if (dev) dev->close();
    RoundTrips out;
    if (raw) out.floor = summarize(std::move(floor_ns));
    if (dev) out.client = summarize(std::move(client_ns));
    if (!pairs.empty()) out.paired = median(std::move(pairs));
    return out;
}

// ---- Guest writes: blocking, posted, doorbell ------------------------------------------------

struct Writes {
    Latency blocking{}, posted{}, doorbell{};
    hostdev::PostedWriteStats posted_stats{};
    uint64_t ioeventfd_writes = 0;
};

std::unique_ptr<hostdev::HostDevice> open_or_die(const std::string& url,
                                                 const hostdev::OpenContext& ctx) {
    auto d = hostdev::TransportRegistry::builtin().open(url, ctx);
    if (!d) {
        std::fprintf(stderr, "bench: %s\n", d.error().message.c_str());
        std::exit(1);
    }
    return std::move(*d);
}

// Three clients, each on its own `potemkin serve multibar --param mmap=0` (a server takes one
// client at a time), written to in rotating order block by block. multibar BAR1: scratch RAM at
// 0x100, the doorbell at 0x004 (vector 0 rings; in INTx mode it raises the line, which nobody
// lowers here, so the device does the same small work for every ring).
Writes guest_writes(const std::string (&socks)[3], unsigned n, const Pinning& pin) {
    NoGuest events;
    hostdev::OpenContext ctx{&events};
    pin.to_client();
    // Standard vfio-user (fastpath=0): the fast path's writes are part 6.
    auto blocking =
        open_or_die("vfio-user:" + socks[0] + "?posted_writes=0&ioeventfds=0&fastpath=0", ctx);
    auto posted = open_or_die("vfio-user:" + socks[1] + "?ioeventfds=0&fastpath=0", ctx);
    auto doorbell = open_or_die("vfio-user:" + socks[2] + "?fastpath=0", ctx);
    auto* door_client = dynamic_cast<vfio_user::VfioUserClient*>(doorbell.get());
    if (door_client == nullptr || door_client->stats().ioeventfds == 0) {
        std::fprintf(stderr, "bench: the server offered no ioeventfds\n");
        std::exit(1);
    }
    const uint8_t value[4] = {0, 0, 0, 0};
    struct Way {
        hostdev::HostDevice* dev;
        uint64_t offset;
        std::vector<double> ns;
    } ways[3] = {{blocking.get(), 0x100, {}}, {posted.get(), 0x100, {}}, {doorbell.get(), 0x4, {}}};
    auto block = [&](Way& w, unsigned k, bool keep) {
        for (unsigned i = 0; i < k; ++i) {
            auto t0 = Clock::now();
            if (!w.dev->region_write(1, w.offset, value)) std::exit(1);
            if (keep) w.ns.push_back(bench::ns_since(t0));
        }
        uint8_t drained[4];
        if (!w.dev->region_read(1, 0x10, drained)) std::exit(1);  // untimed
    };
    for (auto& w : ways) {
        w.ns.reserve(n);
        block(w, 500, false);
    }
    constexpr unsigned kBlock = 250;
    for (unsigned done = 0, b = 0; done < n; ++b) {
        const unsigned k = std::min(kBlock, n - done);
        for (unsigned j = 0; j < 3; ++j) block(ways[(b + j) % 3], k, true);
        done += k;
    }
    Writes out;
    out.blocking = summarize(std::move(ways[0].ns));
    out.posted = summarize(std::move(ways[1].ns));
    out.doorbell = summarize(std::move(ways[2].ns));
    if (auto* c = dynamic_cast<vfio_user::VfioUserClient*>(posted.get()))
        out.posted_stats = c->stats().posted;
    out.ioeventfd_writes = door_client->stats().ioeventfd_writes;
    blocking->close();
    posted->close();
    doorbell->close();
    return out;
}

void print_writes(const Writes& w, unsigned n) {
    std::printf("%-46s %9s %9s %9s\n", "guest write to a BAR, 4 B (ns)", "p50", "p99", "mean");
    std::printf("%-46s %9.0f %9.0f %9.0f\n", "  blocking: REGION_WRITE, reply awaited",
                w.blocking.p50, w.blocking.p99, w.blocking.mean);
    std::printf("%-46s %9.0f %9.0f %9.0f\n", "  posted: REGION_WRITE with NO_REPLY", w.posted.p50,
                w.posted.p99, w.posted.mean);
    std::printf("%-46s %9.0f %9.0f %9.0f\n", "  doorbell: ioeventfd write", w.doorbell.p50,
                w.doorbell.p99, w.doorbell.mean);
    std::printf(
        "  (%u writes each; posted: %llu sent, %llu lost; doorbell: %llu eventfd writes)\n\n", n,
        static_cast<unsigned long long>(w.posted_stats.sent),
        static_cast<unsigned long long>(w.posted_stats.send_failed + w.posted_stats.dropped),
        static_cast<unsigned long long>(w.ioeventfd_writes));
}

constexpr uint32_t kBar0 = bench::kBenchBar0;

// ---- The fast path ---------------------------------------------------------------------------

// The shared-memory floor: two processes answering each other through one cache line of a
// shared memfd (ping at word 0, pong at word 8), the way the fast path's queue does but with
// nothing else. Waits spin, then spin with sched_yield after 2 us (as the client does), so that
// two processes on one CPU still meet.
std::atomic_ref<uint64_t> shm_word(uint8_t* base, size_t offset) {
    return std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(base + offset));
}

// `idle_sleep`: after 200 us without news, nap 100 us between looks (the peer, between the
// floor's blocks, must not take the device CPU from the servers measured meanwhile).
void spin_until(uint8_t* base, size_t offset, uint64_t not_value, uint64_t& seen,
                bool idle_sleep = false) {
    const auto t0 = Clock::now();
    for (unsigned i = 0;; ++i) {
        seen = shm_word(base, offset).load(std::memory_order_acquire);
        if (seen != not_value) return;
        if ((i & 63) != 63) {
            vfio_user::fast_path::cpu_relax();
            continue;
        }
        const auto waited = Clock::now() - t0;
        if (idle_sleep && waited > std::chrono::microseconds(200))
            std::this_thread::sleep_for(std::chrono::microseconds(100));
        else if (waited > std::chrono::microseconds(2))
            ::sched_yield();
    }
}

constexpr uint64_t kSpinStop = ~uint64_t{0};

void spin_peer(int fd) {
    void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) die("mmap in the spin peer");
    auto* base = static_cast<uint8_t*>(p);
    uint64_t last = 0;
    for (;;) {
        uint64_t v = 0;
        spin_until(base, 0, last, v, true);
        if (v == kSpinStop) return;
        shm_word(base, 64).store(v, std::memory_order_release);
        last = v;
    }
}

class ShmPingPong {
  public:
    ShmPingPong() {
        fd_ = ::memfd_create("bench-spin", MFD_CLOEXEC);
        if (fd_ < 0 || ::ftruncate(fd_, 4096) != 0) die("memfd for the spin floor");
        void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
        if (p == MAP_FAILED) die("mmap for the spin floor");
        base_ = static_cast<uint8_t*>(p);
        const std::string fd = std::to_string(fd_);
        child_ = ::fork();
        if (child_ < 0) die("fork");
        if (child_ == 0) {
            if (::fcntl(fd_, F_SETFD, 0) == 0)
                ::execl("/proc/self/exe", "bench_vfio_user", "--spin-peer", fd.c_str(), nullptr);
            ::_exit(127);
        }
    }
    ~ShmPingPong() {
        shm_word(base_, 0).store(kSpinStop, std::memory_order_release);
        if (::waitpid(child_, nullptr, 0) != child_) std::perror("bench: waitpid");
        if (::munmap(base_, 4096) != 0) std::perror("bench: munmap");
        if (::close(fd_) != 0) std::perror("bench: close");
    }
    void round_trip() {
        ++seq_;
        shm_word(base_, 0).store(seq_, std::memory_order_release);
        uint64_t v = 0;
        spin_until(base_, 64, seq_ - 1, v);
        if (v != seq_) {
            std::fprintf(stderr, "bench: the spin peer answered %llu for %llu\n",
                         static_cast<unsigned long long>(v), static_cast<unsigned long long>(seq_));
            std::exit(1);
        }
    }

  private:
    int fd_ = -1;
    uint8_t* base_ = nullptr;
    pid_t child_ = -1;
    uint64_t seq_ = 0;
};

// CPU seconds a process's main thread (a server's serving thread) has run, from
// /proc/PID/schedstat (nanoseconds; /proc/PID/stat counts 10 ms ticks, too coarse for an idle
// server).
double cpu_seconds(pid_t pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/schedstat");
    unsigned long long run_ns = 0;
    if (!(f >> run_ns)) {
        std::fprintf(stderr, "bench: cannot read /proc/%d/schedstat\n", pid);
        std::exit(1);
    }
    return double(run_ns) / 1e9;
}

struct FastFigures {
    Latency floor{}, std_read{}, fast_read{}, asleep_read{}, std_write{}, fast_write{},
        asleep_write{};
    vfio_user::VfioUserStats fast_stats{}, asleep_stats{};
};

vfio_user::VfioUserStats client_stats(hostdev::HostDevice& d) {
    auto* c = dynamic_cast<vfio_user::VfioUserClient*>(&d);
    return c ? c->stats() : vfio_user::VfioUserStats{};
}

// A pause longer than the server's poll window, so that it is asleep at the next access.
std::chrono::microseconds asleep_pause(uint32_t poll_us) {
    return std::chrono::microseconds(std::max<uint32_t>(200, 2 * poll_us + 100));
}

// edu's liveness register (BAR0 0x04): reads return the inverse of the last write.
FastFigures fast_round_trips(const std::string& std_url, const std::string& fast_url,
                             const std::string& asleep_url, unsigned n, uint32_t poll_us,
                             const Pinning& pin) {
    NoGuest events;
    hostdev::OpenContext ctx{&events};
    pin.to_device();
    ShmPingPong spin;  // its peer on the device CPU
    pin.to_client();
    auto std_dev = open_or_die(std_url, ctx);
    auto fast_dev = open_or_die(fast_url, ctx);
    auto asleep_dev = open_or_die(asleep_url, ctx);
    if (!client_stats(*fast_dev).fast_path || !client_stats(*asleep_dev).fast_path ||
        client_stats(*std_dev).fast_path) {
        std::fprintf(stderr, "bench: the fast path was not agreed where expected\n");
        std::exit(1);
    }
    const uint8_t value[4] = {1, 2, 3, 4};
    uint8_t buf[4];
    auto floor_block = [&](unsigned k, std::vector<double>& ns) {
        for (unsigned i = 0; i < k; ++i) {
            auto t0 = Clock::now();
            spin.round_trip();
            ns.push_back(bench::ns_since(t0));
        }
    };
    auto access_block = [&](hostdev::HostDevice& d, bool write, unsigned k, bool pause,
                            std::vector<double>& ns) {
        for (unsigned i = 0; i < k; ++i) {
            if (pause) std::this_thread::sleep_for(asleep_pause(poll_us));
            auto t0 = Clock::now();
            const bool good = write ? static_cast<bool>(d.region_write(0, 0x04, value))
                                    : static_cast<bool>(d.region_read(0, 0x04, buf));
            ns.push_back(bench::ns_since(t0));
            if (!good) std::exit(1);
        }
        if (write && !d.region_read(0, 0x04, buf)) std::exit(1);  // untimed: drains posted
    };
    std::vector<double> warm;
    floor_block(500, warm);
    access_block(*std_dev, false, 500, false, warm);
    access_block(*fast_dev, false, 500, false, warm);

    std::vector<double> f, sr, fr, ar, sw, fw, aw;
    constexpr unsigned kBlock = 250;
    // The accesses after a pause take the pause too: a tenth of them.
    const unsigned asleep_every = 10;
    for (unsigned done = 0, b = 0; done < n; ++b) {
        const unsigned k = std::min(kBlock, n - done);
        const unsigned ka = std::max(1u, k / asleep_every);
        for (unsigned j = 0; j < 7; ++j) {
            switch ((b + j) % 7) {
                case 0:
                    floor_block(k, f);
                    break;
                case 1:
                    access_block(*std_dev, false, k, false, sr);
                    break;
                case 2:
                    access_block(*fast_dev, false, k, false, fr);
                    break;
                case 3:
                    access_block(*asleep_dev, false, ka, true, ar);
                    break;
                case 4:
                    access_block(*std_dev, true, k, false, sw);
                    break;
                case 5:
                    access_block(*fast_dev, true, k, false, fw);
                    break;
                case 6:
                    access_block(*asleep_dev, true, ka, true, aw);
                    break;
            }
        }
        done += k;
    }
    FastFigures out;
    out.floor = summarize(std::move(f));
    out.std_read = summarize(std::move(sr));
    out.fast_read = summarize(std::move(fr));
    out.asleep_read = summarize(std::move(ar));
    out.std_write = summarize(std::move(sw));
    out.fast_write = summarize(std::move(fw));
    out.asleep_write = summarize(std::move(aw));
    out.fast_stats = client_stats(*fast_dev);
    out.asleep_stats = client_stats(*asleep_dev);
    std_dev->close();
    fast_dev->close();
    asleep_dev->close();
    return out;
}

void print_fast(const FastFigures& x, unsigned n) {
    auto row = [&](const char* name, const Latency& l) {
        std::printf("%-52s %9.0f %9.0f  %7.2fx %9.1fx\n", name, l.p50, l.p99, l.p50 / x.floor.p50,
                    x.std_read.p50 / l.p50);
    };
    std::printf("%-52s %9s %9s  %8s %10s\n", "fast path, 4 B register access (ns)", "p50", "p99",
                "/floor", "std read/");
    row("floor: shared-memory spin ping-pong", x.floor);
    row("read, standard vfio-user (fastpath=0)", x.std_read);
    row("read, fast path, server polling", x.fast_read);
    row("read, fast path, server asleep", x.asleep_read);
    row("write, standard vfio-user (posted)", x.std_write);
    row("write, fast path (posted), server polling", x.fast_write);
    row("write, fast path (posted), server asleep", x.asleep_write);
    std::printf(
        "  (%u accesses per row, a tenth when asleep; fast client: %llu queued, %llu kicks, %llu "
        "blocking waits; asleep client: %llu queued, %llu kicks, %llu blocking waits)\n\n",
        n, static_cast<unsigned long long>(x.fast_stats.fast_path_accesses),
        static_cast<unsigned long long>(x.fast_stats.fast_path_kicks),
        static_cast<unsigned long long>(x.fast_stats.fast_path_blocks),
        static_cast<unsigned long long>(x.asleep_stats.fast_path_accesses),
        static_cast<unsigned long long>(x.asleep_stats.fast_path_kicks),
        static_cast<unsigned long long>(x.asleep_stats.fast_path_blocks));
}

// Guest loops (ns per access) and the idle server's CPU.
void fast_guest_and_idle(const std::string& std_url, const std::string& fast_url, pid_t fast_pid,
                         unsigned n, const Pinning& pin) {
    pin.to_client();
    const uint32_t g = std::max(1000u, n / 5);
    auto loop = [&](const std::string& url, bool write) {
        return bench::per_iteration(
            [&](uint32_t k) {
                return bench::time_pci_front(bench::mmio_loop(kBar0 + 4, k, write), url, kBar0);
            },
            g);
    };
    std::printf("%-52s %9s %9s\n", "guest edu liveness register (ns per access)", "read", "write");
    const double ir = loop("inproc:edu", false), iw = loop("inproc:edu", true);
    const double sr = loop(std_url, false), sw = loop(std_url, true);
    const double fr = loop(fast_url, false), fw = loop(fast_url, true);
    std::printf("%-52s %9.0f %9.0f\n", "  PCI_FRONT + inproc:edu", ir, iw);
    std::printf("%-52s %9.0f %9.0f\n", "  PCI_FRONT + standard vfio-user", sr, sw);
    std::printf("%-52s %9.0f %9.0f  (read %.1fx faster than standard, %.1fx inproc)\n\n",
                "  PCI_FRONT + fast path", fr, fw, sr / fr, fr / ir);

    // A connected, idle fast-path client: after the poll window the server sleeps.
    NoGuest events;
    hostdev::OpenContext ctx{&events};
    auto d = open_or_die(fast_url, ctx);
    uint8_t buf[4];
    if (!d->region_read(0, 0x04, buf)) std::exit(1);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // past the poll window
    const double c0 = cpu_seconds(fast_pid);
    const auto t0 = Clock::now();
    std::this_thread::sleep_for(std::chrono::seconds(2));
    const double secs = bench::ns_since(t0) / 1e9;
    const double used = cpu_seconds(fast_pid) - c0;
    // And while the client keeps it busy, for contrast: back-to-back reads for the same time.
    const double b0 = cpu_seconds(fast_pid);
    const auto t1 = Clock::now();
    while (Clock::now() - t1 < std::chrono::seconds(1))
        if (!d->region_read(0, 0x04, buf)) std::exit(1);
    const double busy = (cpu_seconds(fast_pid) - b0) / (bench::ns_since(t1) / 1e9);
    std::printf("%-52s %9.1f us CPU per s  (%.2f s idle; busy: %.2f CPU-s/s)\n\n",
                "fast-path server, client connected and idle", 1e6 * used / secs, secs, busy);
    d->close();
}

double guest_run(const std::string& url, uint32_t n) {
    return bench::time_pci_front(bench::mmio_loop(kBar0 + 4, n), url, kBar0);
}

// GB/s of memcpy of `bytes` into dst, best of 5.
double bandwidth(uint8_t* dst, const uint8_t* src, size_t bytes) {
    double best = 1e30;
    for (int i = 0; i < 5; ++i) {
        auto t0 = Clock::now();
        std::memcpy(dst, src, bytes);
        best = std::min(best, bench::ns_since(t0));
    }
    return double(bytes) / best;  // bytes per ns = GB/s
}

}  // namespace

int main(int argc, char** argv) {
    unsigned n = 50'000;
    Part part = Part::all;
    bool pin_on = false, pin_same = false;
    uint32_t poll_us = 50;
    for (int i = 1; i < argc; ++i) {
        const std::string_view a = argv[i];
        if (a == "--floor-peer" && i + 1 < argc) {
            floor_peer(std::atoi(argv[i + 1]));
            return 0;
        }
        if (a == "--spin-peer" && i + 1 < argc) {
            spin_peer(std::atoi(argv[i + 1]));
            return 0;
        }
        if (a == "--poll-us" && i + 1 < argc) {
            char* end = nullptr;
            const unsigned long v = std::strtoul(argv[++i], &end, 10);
            if (*end != 0 || v > 1000000) {
                std::fprintf(stderr, "bench: --poll-us '%s' is not 0..1000000\n%s", argv[i],
                             kUsage);
                return 2;
            }
            poll_us = uint32_t(v);
            continue;
        }
        if (a == "--pin") {
            pin_on = true;
            continue;
        }
        if (a == "--pin-same") {
            pin_on = pin_same = true;
            continue;
        }
        if (a == "--help" || a == "-h") {
            std::fputs(kUsage, stdout);
            return 0;
        }
        if (a == "--only" && i + 1 < argc) {
            const std::string_view p = argv[++i];
            part = p == "rtt"      ? Part::rtt
                   : p == "floor"  ? Part::floor
                   : p == "client" ? Part::client
                   : p == "guest"  ? Part::guest
                   : p == "writes" ? Part::writes
                   : p == "fast"   ? Part::fast
                                   : Part::all;
            if (part == Part::all) {
                std::fprintf(stderr, "bench: --only rtt|floor|client|guest|writes|fast\n%s",
                             kUsage);
                return 2;
            }
        } else if (char* end = nullptr;
                   (n = unsigned(std::strtoul(argv[i], &end, 10))) == 0 || *end != 0) {
            std::fprintf(stderr, "bench: unknown argument '%s'\n%s", argv[i], kUsage);
            return 2;
        }
    }
    if (auto r = machine::register_builtins(); !r) {
        std::fprintf(stderr, "bench: %s\n", r.error().message.c_str());
        return 1;
    }
    const std::string sock = "/tmp/potemkin-bench-" + std::to_string(::getpid()) + ".sock";
    const Pinning pin(pin_on, pin_same);
    pin.to_device();
    // Three multibar servers for the write figures (one client each).
    const std::string wsocks[3] = {sock + ".w0", sock + ".w1", sock + ".w2"};
    std::vector<std::unique_ptr<testing::ServerProcess>> write_servers;
    if (part == Part::all || part == Part::writes) {
        for (const auto& p : wsocks) {
            write_servers.push_back(std::make_unique<testing::ServerProcess>(p, "multibar"));
            // No mappable BAR2: a device with one gets no posted writes (client.cpp).
            write_servers.back()->set_params({"mmap=0"});
            if (!write_servers.back()->start()) {
                std::fprintf(stderr, "bench: could not start potemkin serve multibar\n");
                return 1;
            }
        }
    }
    // The fast path: its own edu servers (one client each): plain, polling, and one whose
    // client pauses before each access (so it finds the server asleep).
    std::vector<std::unique_ptr<testing::ServerProcess>> fast_servers;
    if (part == Part::all || part == Part::fast) {
        for (const char* suffix : {".fstd", ".fast", ".fsleep"}) {
            fast_servers.push_back(std::make_unique<testing::ServerProcess>(sock + suffix));
            fast_servers.back()->set_args({"--poll-us", std::to_string(poll_us)});
            if (!fast_servers.back()->start()) {
                std::fprintf(stderr, "bench: could not start potemkin serve edu\n");
                return 1;
            }
        }
    }
    auto run_fast = [&] {
        const std::string std_url = "vfio-user:" + sock + ".fstd?fastpath=0";
        const std::string fast_url = "vfio-user:" + sock + ".fast";
        const std::string asleep_url = "vfio-user:" + sock + ".fsleep";
        std::printf("fast path: server poll window %u us (potemkin serve --poll-us)\n", poll_us);
        print_fast(fast_round_trips(std_url, fast_url, asleep_url, n, poll_us, pin), n);
        fast_guest_and_idle(std_url, fast_url, fast_servers[1]->pid(), n, pin);
    };
    if (part == Part::fast) {
        if (pin.on())
            std::printf("pinned: client on CPU %d, device processes on CPU %d\n\n",
                        pin.client_cpu(), pin.device_cpu());
        run_fast();
        return 0;
    }
    if (part == Part::writes) {
        if (pin.on())
            std::printf("pinned: client on CPU %d, device processes on CPU %d\n\n",
                        pin.client_cpu(), pin.device_cpu());
        print_writes(guest_writes(wsocks, n, pin), n);
        return 0;
    }
    testing::ServerProcess server(sock);
    if (part != Part::floor && !server.start()) {
        std::fprintf(stderr, "bench: could not start potemkin serve edu\n");
        return 1;
    }
    // Parts 2-3 measure standard vfio-user messages; the fast path is part 6.
    const std::string url = "vfio-user:" + sock + "?fastpath=0";

    if (part == Part::guest) pin.to_client();
    if (part == Part::guest) {
        const double ns = guest_run(url, n);
        std::printf(
            "guest edu liveness read over vfio-user: %u accesses, %.0f ns each (with "
            "start-up)\n",
            n, ns / n);
        return 0;
    }
    std::printf("potemkin bench_vfio_user: %u round trips per figure\n", n);
    if (pin.on())
        std::printf("pinned: client on CPU %d, device processes on CPU %d\n\n", pin.client_cpu(),
                    pin.device_cpu());
    else
        std::printf("not pinned (--pin: client and device processes on two CPUs)\n\n");
    const RoundTrips rt = floor_and_client(url, n, part, pin);
    std::printf("%-46s %9s %9s %9s\n", "round trip (ns)", "p50", "p99", "mean");
    if (part != Part::client)
        std::printf("%-46s %9.0f %9.0f %9.0f\n", "floor: raw REGION_READ 4 B between processes",
                    rt.floor.p50, rt.floor.p99, rt.floor.mean);
    if (part != Part::floor)
        std::printf("%-46s %9.0f %9.0f %9.0f\n", "client -> potemkin serve edu, REGION_READ 4 B",
                    rt.client.p50, rt.client.p99, rt.client.mean);
    if (part != Part::all && part != Part::rtt) return 0;
    std::printf("%-46s %8.2fx %8.2fx %8.2fx\n", "ratio to the floor", rt.client.p50 / rt.floor.p50,
                rt.client.p99 / rt.floor.p99, rt.client.mean / rt.floor.mean);
    std::printf("%-46s %8.2fx\n\n", "ratio of block p50s, median of block pairs", rt.paired);
    if (part == Part::rtt) return 0;

    const uint32_t g = std::max(1000u, n / 5);
    double over_vfu = bench::per_iteration([&](uint32_t k) { return guest_run(url, k); }, g);
    double inproc = bench::per_iteration([&](uint32_t k) { return guest_run("inproc:edu", k); }, g);
    std::printf("%-46s %12s\n", "guest edu liveness read (ns per access)", "");
    std::printf("%-46s %12.0f\n", "  PCI_FRONT + inproc:edu", inproc);
    std::printf("%-46s %12.0f  (%.1fx inproc)\n\n", "  PCI_FRONT + vfio-user (potemkin serve)",
                over_vfu, over_vfu / inproc);
    print_writes(guest_writes(wsocks, n, pin), n);
    run_fast();

    const size_t bytes = 64u << 20;
    auto mem = vm::GuestMemory::create({{Gpa(0), bytes}});
    if (!mem) {
        std::fprintf(stderr, "bench: %s\n", mem.error().message.c_str());
        return 1;
    }
    void* shared = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, (*mem)->fd(), 0);
    if (shared == MAP_FAILED) die("mmap of guest RAM");
    std::vector<uint8_t> src(bytes, 0x5a), priv(bytes, 0);
    std::memset(shared, 0, bytes);  // fault the pages in before timing
    double shared_gbs = bandwidth(static_cast<uint8_t*>(shared), src.data(), bytes);
    double private_gbs = bandwidth(priv.data(), src.data(), bytes);
    std::printf("%-46s %9.2f GB/s\n", "DMA into guest RAM via the memfd mapping", shared_gbs);
    std::printf("%-46s %9.2f GB/s  (%.0f%%)\n", "memcpy into private memory", private_gbs,
                100.0 * shared_gbs / private_gbs);
    if (::munmap(shared, bytes) != 0) die("munmap of guest RAM");
    return 0;
}

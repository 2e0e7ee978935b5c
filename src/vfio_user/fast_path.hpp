// potemkin's shared-memory fast path for region accesses: a vfio-user extension negotiated in
// VERSION (capability "potemkin": {"fast_path": ...}; docs/fast-path.md). Both ends of it live
// here: the area's layout, the client's queue (ClientQueue) and the server's (ServerQueue).
//
// The area is one sealed memfd page the server creates and passes with its VERSION reply,
// together with two eventfds: "kick" (client -> server: wake up, work is queued) and "answer"
// (server -> client: an access you block on is done). Layout (every field little-endian, every
// line 64 bytes):
//   line 0      header, written once by the server: magic, version, slot count, slot size,
//               data bytes per slot;
//   line 1      the client's: head (accesses published), waiting (the client blocks on the
//               answer eventfd), cpu (the CPU it last ran on, + 1; a hint);
//   line 2      the server's: tail (accesses completed), sleeping (the server blocks on the
//               kick eventfd), cpu (likewise);
//   line 4..    kSlots slots of 64 bytes: op, region, offset, size, status, ticket, data[32].
// Access n (counting from 0) lives in slot n % kSlots. The client fills it and publishes
// head = n + 1 (release); the server reads head (acquire), copies the slot once, validates the
// copy, runs it, writes the result (status, ticket = n, data) and publishes tail = n + 1
// (release). Accesses complete in order: a read queued after posted writes completes after them.
//
// Sleep and wake (the lost-wakeup race closed by seq_cst on both sides, Dekker's pattern):
// server: sleeping = 1; fence; look at head; nothing new -> block on kick (else sleeping = 0).
// client: head = n + 1; fence; look at sleeping; 1 -> write kick. Either the server sees the new
// head or the client sees sleeping = 1. The answer eventfd works the same way round with the
// client's waiting flag and the server's tail.
//
// Neither side trusts the other's memory: every field the peer writes is read once into a local
// copy and checked (a head or tail outside the possible window, a ticket that is not the one
// due, an op, region, size or status out of range); what fails is a protocol error with the
// field named, and the connection is dropped. Data are copied out, never used in place.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "common/result.hpp"
#include "common/unique_fd.hpp"

namespace potemkin::vfio_user::fast_path {

inline constexpr uint32_t kMagic = 0x31504650;  // "PFP1"
inline constexpr uint32_t kVersion = 1;
inline constexpr uint32_t kSlots = 32;
inline constexpr uint32_t kSlotSize = 64;
inline constexpr uint32_t kMaxData = 32;  // bytes per access; larger ones go by message
inline constexpr size_t kLine = 64;
inline constexpr size_t kSlotsOffset = 4 * kLine;
inline constexpr size_t kAreaSize = 4096;
static_assert(kSlotsOffset + size_t{kSlots} * kSlotSize <= kAreaSize);

enum class Op : uint32_t { read = 1, write = 2, posted_write = 3 };

// One region access as queued.
struct Access {
    Op op = Op::read;
    uint32_t region = 0;
    uint64_t offset = 0;
    uint32_t size = 0;
    std::array<uint8_t, kMaxData> data{};
};

// A completed access as the client reads it back.
struct Answer {
    int status = 0;  // 0, or the server's errno (1..4096)
    std::array<uint8_t, kMaxData> data{};
};

// The shared page: a sealed memfd (it can neither shrink nor grow: a peer cannot make our
// mapping fault) and its mapping. Move-only; unmaps on destruction.
class Area {
  public:
    // The server's: a new memfd, sized, sealed, its header written.
    static Result<Area> create();
    // The client's: the server's fd, checked (a memfd of at least kAreaSize, sealed against
    // shrinking) and mapped; the header must match this side's constants.
    static Result<Area> adopt(UniqueFd fd);
    // Over memory the caller owns (unit tests of the validation): no fd.
    static Area over(std::span<uint8_t, kAreaSize> memory);
    Area(Area&& o) noexcept;
    Area& operator=(Area&& o) noexcept;
    Area(const Area&) = delete;
    Area& operator=(const Area&) = delete;
    ~Area();

    int fd() const { return fd_.get(); }
    uint8_t* base() const { return base_; }

  private:
    Area() = default;
    void unmap();
    UniqueFd fd_;
    uint8_t* base_ = nullptr;
    bool mapped_ = false;
};

// The client's end (one thread).
class ClientQueue {
  public:
    explicit ClientQueue(uint8_t* base) : base_(base) {}
    // Accesses published and not known to be completed.
    uint64_t outstanding() const { return head_ - tail_; }
    bool full() const { return outstanding() >= kSlots; }
    uint64_t head() const { return head_; }
    uint64_t tail() const { return tail_; }
    // Queues `a` (the queue must not be full): its ticket. Returns whether the server said it
    // sleeps (then the caller writes the kick eventfd).
    bool publish(const Access& a, uint64_t& ticket);
    // Reads the server's tail: the number completed now. A tail before the last one seen or
    // beyond what was published is a protocol error (EPROTO), naming the values.
    Result<uint64_t> poll_completed();
    // The answer of access `ticket` (completed: poll_completed() > ticket, and no access
    // published since wrapped onto its slot). A wrong ticket echo or status is EPROTO.
    Result<Answer> answer(uint64_t ticket, uint32_t size) const;
    // Tells the server to write the answer eventfd on its next completions (on) or not (off);
    // seq_cst, so that a poll_completed() after set_waiting(true) sees what the server did
    // before it looked at the flag.
    void set_waiting(bool on);
    // Where each side runs (a hint: a waiter that shares its CPU with the other side yields at
    // once instead of spinning, since the other side cannot run while it spins).
    void note_cpu(int cpu);
    bool server_on_cpu(int cpu) const;

  private:
    uint8_t* base_;
    uint64_t head_ = 0;
    uint64_t tail_ = 0;
};

// The server's end (one thread).
class ServerQueue {
  public:
    explicit ServerQueue(uint8_t* base) : base_(base) {}
    // The next access, if the client published one: copied out of its slot once. A head that
    // goes backwards or more than kSlots ahead of the tail is EPROTO (the connection is
    // broken); an access whose fields are out of range is returned with `invalid` set (its
    // error is answered in the slot, the queue goes on).
    struct Next {
        bool present = false;
        bool invalid = false;  // bad op or size: answered with EINVAL
        uint64_t ticket = 0;
        Access access;
    };
    Result<Next> next();
    // Completes the access next() returned last: status (0 or an errno) and, for a read,
    // `data`. Publishes the tail; true when the client waits on the answer eventfd.
    bool complete(uint64_t ticket, int status, std::span<const uint8_t> data);
    // The sleep protocol: sleeping = 1, fence, then whether the client queued more (then the
    // caller clears the flag and goes on instead of sleeping).
    bool sleep_unless_work();
    void wake();
    // The client published an access not served yet.
    bool has_work() const;
    uint64_t completed() const { return tail_; }
    void note_cpu(int cpu);
    bool client_on_cpu(int cpu) const;

  private:
    uint8_t* base_;
    uint64_t tail_ = 0;
};

// One iteration of a spin wait: tells the CPU (a sibling hyperthread, the memory system) that
// this is one.
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#endif
}

// A field name for messages: "fast path: the server's tail 7 is outside [3, 5]".
inline constexpr const char* kName = "fast path";

}  // namespace potemkin::vfio_user::fast_path

// The fast path's shared area and its two queues (fast_path.hpp; docs/fast-path.md). Every
// field in the area is a 64-bit word accessed through std::atomic_ref: the peer writes it
// concurrently, and a torn or hostile value must only ever be a value, copied once and checked.
#include "vfio_user/fast_path.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <utility>

#include "common/log.hpp"

namespace potemkin::vfio_user::fast_path {

namespace {

// Word offsets (in bytes) in the area.
constexpr size_t kHeaderMagic = 0;     // u32 magic | u32 version << 32
constexpr size_t kHeaderShape = 8;     // u32 slots | u32 slot size << 32
constexpr size_t kHeaderData = 16;     // max data bytes per slot
constexpr size_t kClientHead = kLine;  // accesses published
constexpr size_t kClientWaiting = kLine + 8;
constexpr size_t kClientCpu = kLine + 16;  // CPU + 1 (0: not known)
constexpr size_t kServerTail = 2 * kLine;  // accesses completed
constexpr size_t kServerSleeping = 2 * kLine + 8;
constexpr size_t kServerCpu = 2 * kLine + 16;
// In a slot.
constexpr size_t kSlotOpRegion = 0;     // u32 op | u32 region << 32
constexpr size_t kSlotOffset = 8;       // u64
constexpr size_t kSlotSizeStatus = 16;  // u32 size | u32 status << 32
constexpr size_t kSlotTicket = 24;      // u64: the access number, echoed by the server
constexpr size_t kSlotData = 32;        // kMaxData bytes
constexpr uint32_t kMaxErrno = 4096;    // as vfio-user's error_no

std::atomic_ref<uint64_t> word(uint8_t* base, size_t offset) {
    return std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(base + offset));
}

uint8_t* slot(uint8_t* base, uint64_t n) {
    return base + kSlotsOffset + (n % kSlots) * kSlotSize;
}

void store_data(uint8_t* s, std::span<const uint8_t> data) {
    for (size_t w = 0; w < kMaxData / 8; ++w) {
        uint64_t v = 0;
        const size_t from = w * 8;
        if (from < data.size())
            std::memcpy(&v, data.data() + from, std::min<size_t>(8, data.size() - from));
        word(s, kSlotData + from).store(v, std::memory_order_relaxed);
    }
}

void load_data(uint8_t* s, std::array<uint8_t, kMaxData>& out) {
    for (size_t w = 0; w < kMaxData / 8; ++w) {
        const uint64_t v = word(s, kSlotData + w * 8).load(std::memory_order_relaxed);
        std::memcpy(out.data() + w * 8, &v, 8);
    }
}

Unexpected<Error> proto(std::string text) {
    return fail(Error{fmt::format("{}: {}", kName, text), EPROTO});
}

}  // namespace

// ---- Area --------------------------------------------------------------------------------------

Area::Area(Area&& o) noexcept
    : fd_(std::move(o.fd_)), base_(std::exchange(o.base_, nullptr)), mapped_(o.mapped_) {
    o.mapped_ = false;
}

Area& Area::operator=(Area&& o) noexcept {
    if (this != &o) {
        unmap();
        fd_ = std::move(o.fd_);
        base_ = std::exchange(o.base_, nullptr);
        mapped_ = std::exchange(o.mapped_, false);
    }
    return *this;
}

Area::~Area() {
    unmap();
}

void Area::unmap() {
    if (mapped_ && base_ != nullptr && ::munmap(base_, kAreaSize) != 0)
        log::warn("{}: unmapping the area: {}", kName, std::strerror(errno));
    base_ = nullptr;
    mapped_ = false;
}

Result<Area> Area::create() {
    Area a;
    a.fd_.reset(::memfd_create("potemkin-fast-path", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (!a.fd_) return failf(Errno{errno}, "{}: memfd_create", kName);
    if (::ftruncate(a.fd_.get(), kAreaSize) != 0)
        return failf(Errno{errno}, "{}: sizing the area", kName);
    if (::fcntl(a.fd_.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0)
        return failf(Errno{errno}, "{}: sealing the area", kName);
    void* p = ::mmap(nullptr, kAreaSize, PROT_READ | PROT_WRITE, MAP_SHARED, a.fd_.get(), 0);
    if (p == MAP_FAILED) return failf(Errno{errno}, "{}: mapping the area", kName);
    a.base_ = static_cast<uint8_t*>(p);
    a.mapped_ = true;
    word(a.base_, kHeaderMagic).store(kMagic | (uint64_t{kVersion} << 32));
    word(a.base_, kHeaderShape).store(kSlots | (uint64_t{kSlotSize} << 32));
    word(a.base_, kHeaderData).store(kMaxData);
    return a;
}

Result<Area> Area::adopt(UniqueFd fd) {
    const int seals = ::fcntl(fd.get(), F_GET_SEALS);
    if (seals < 0) return failf(Errno{errno}, "{}: the area fd is not a sealable memfd", kName);
    if ((seals & F_SEAL_SHRINK) == 0)
        return failf("{}: the area memfd is not sealed against shrinking (seals {:#x})", kName,
                     seals);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return failf(Errno{errno}, "{}: fstat of the area", kName);
    if (st.st_size < static_cast<off_t>(kAreaSize))
        return failf("{}: the area is {} bytes, {} needed", kName, st.st_size, kAreaSize);
    Area a;
    a.fd_ = std::move(fd);
    void* p = ::mmap(nullptr, kAreaSize, PROT_READ | PROT_WRITE, MAP_SHARED, a.fd_.get(), 0);
    if (p == MAP_FAILED) return failf(Errno{errno}, "{}: mapping the area", kName);
    a.base_ = static_cast<uint8_t*>(p);
    a.mapped_ = true;
    const uint64_t magic = word(a.base_, kHeaderMagic).load();
    const uint64_t shape = word(a.base_, kHeaderShape).load();
    const uint64_t data = word(a.base_, kHeaderData).load();
    if (magic != (kMagic | (uint64_t{kVersion} << 32)) ||
        shape != (kSlots | (uint64_t{kSlotSize} << 32)) || data != kMaxData)
        return failf(
            "{}: the area's header (magic/version {:#x}, slots/size {:#x}, data {}) is not "
            "version {} with {} slots of {} bytes",
            kName, magic, shape, data, kVersion, kSlots, kSlotSize);
    return a;
}

Area Area::over(std::span<uint8_t, kAreaSize> memory) {
    Area a;
    a.base_ = memory.data();
    return a;
}

// ---- ClientQueue -------------------------------------------------------------------------------

bool ClientQueue::publish(const Access& a, uint64_t& ticket) {
    ticket = head_;
    uint8_t* s = slot(base_, head_);
    word(s, kSlotOpRegion)
        .store(static_cast<uint32_t>(a.op) | (uint64_t{a.region} << 32), std::memory_order_relaxed);
    word(s, kSlotOffset).store(a.offset, std::memory_order_relaxed);
    word(s, kSlotSizeStatus).store(a.size, std::memory_order_relaxed);
    // Not the ticket: the server must write it back, so a tail it moved without answering
    // this slot is caught (answer()).
    word(s, kSlotTicket).store(~head_, std::memory_order_relaxed);
    if (a.op != Op::read) store_data(s, std::span(a.data).first(std::min(a.size, kMaxData)));
    ++head_;
    // seq_cst store, then seq_cst load: the server either sees this head after setting its
    // sleeping flag, or we see the flag (fast_path.hpp, "Sleep and wake").
    word(base_, kClientHead).store(head_, std::memory_order_seq_cst);
    return word(base_, kServerSleeping).load(std::memory_order_seq_cst) != 0;
}

Result<uint64_t> ClientQueue::poll_completed() {
    const uint64_t t = word(base_, kServerTail).load(std::memory_order_acquire);
    if (t < tail_ || t > head_)
        return proto(
            fmt::format("the server's completion count {} is outside [{}, {}]", t, tail_, head_));
    tail_ = t;
    return t;
}

Result<Answer> ClientQueue::answer(uint64_t ticket, uint32_t size) const {
    uint8_t* s = slot(base_, ticket);
    const uint64_t echo = word(s, kSlotTicket).load(std::memory_order_relaxed);
    if (echo != ticket)
        return proto(fmt::format("slot {} answers access {}, access {} was due", ticket % kSlots,
                                 echo, ticket));
    const auto status =
        static_cast<uint32_t>(word(s, kSlotSizeStatus).load(std::memory_order_relaxed) >> 32);
    if (status > kMaxErrno)
        return proto(
            fmt::format("access {} has status {}, beyond errno {}", ticket, status, kMaxErrno));
    Answer out;
    out.status = static_cast<int>(status);
    if (status == 0 && size > 0) load_data(s, out.data);
    return out;
}

void ClientQueue::set_waiting(bool on) {
    word(base_, kClientWaiting).store(on ? 1 : 0, std::memory_order_seq_cst);
}

void ClientQueue::note_cpu(int cpu) {
    word(base_, kClientCpu).store(static_cast<uint64_t>(cpu) + 1, std::memory_order_relaxed);
}

bool ClientQueue::server_on_cpu(int cpu) const {
    return cpu >= 0 && word(base_, kServerCpu).load(std::memory_order_relaxed) ==
                           static_cast<uint64_t>(cpu) + 1;
}

// ---- ServerQueue -------------------------------------------------------------------------------

void ServerQueue::note_cpu(int cpu) {
    word(base_, kServerCpu).store(static_cast<uint64_t>(cpu) + 1, std::memory_order_relaxed);
}

bool ServerQueue::client_on_cpu(int cpu) const {
    return cpu >= 0 && word(base_, kClientCpu).load(std::memory_order_relaxed) ==
                           static_cast<uint64_t>(cpu) + 1;
}

Result<ServerQueue::Next> ServerQueue::next() {
    Next n;
    const uint64_t head = word(base_, kClientHead).load(std::memory_order_acquire);
    if (head == tail_) return n;
    if (head < tail_ || head - tail_ > kSlots)
        return proto(fmt::format("the client's publish count {} is outside [{}, {}]", head, tail_,
                                 tail_ + kSlots));
    uint8_t* s = slot(base_, tail_);
    const uint64_t op_region = word(s, kSlotOpRegion).load(std::memory_order_relaxed);
    n.present = true;
    n.ticket = tail_;
    const auto op = static_cast<uint32_t>(op_region);
    n.access.region = static_cast<uint32_t>(op_region >> 32);
    n.access.offset = word(s, kSlotOffset).load(std::memory_order_relaxed);
    n.access.size = static_cast<uint32_t>(word(s, kSlotSizeStatus).load(std::memory_order_relaxed));
    if (op < static_cast<uint32_t>(Op::read) || op > static_cast<uint32_t>(Op::posted_write) ||
        n.access.size == 0 || n.access.size > kMaxData) {
        n.invalid = true;
        n.access.op = Op::write;  // never answered with data
        return n;
    }
    n.access.op = static_cast<Op>(op);
    if (n.access.op != Op::read) load_data(s, n.access.data);
    return n;
}

bool ServerQueue::complete(uint64_t ticket, int status, std::span<const uint8_t> data) {
    uint8_t* s = slot(base_, ticket);
    const auto st =
        static_cast<uint32_t>(status < 0 || status > static_cast<int>(kMaxErrno) ? EIO : status);
    word(s, kSlotSizeStatus).store(uint64_t{st} << 32, std::memory_order_relaxed);
    word(s, kSlotTicket).store(ticket, std::memory_order_relaxed);
    if (st == 0 && !data.empty())
        store_data(s, data.first(std::min<size_t>(data.size(), kMaxData)));
    tail_ = ticket + 1;
    word(base_, kServerTail).store(tail_, std::memory_order_seq_cst);
    return word(base_, kClientWaiting).load(std::memory_order_seq_cst) != 0;
}

bool ServerQueue::sleep_unless_work() {
    word(base_, kServerSleeping).store(1, std::memory_order_seq_cst);
    if (word(base_, kClientHead).load(std::memory_order_seq_cst) != tail_) {
        wake();
        return false;
    }
    return true;
}

bool ServerQueue::has_work() const {
    return word(base_, kClientHead).load(std::memory_order_acquire) != tail_;
}

void ServerQueue::wake() {
    word(base_, kServerSleeping).store(0, std::memory_order_relaxed);
}

}  // namespace potemkin::vfio_user::fast_path

#include "devices/generic.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <sys/io.h>
#define POTEMKIN_HAVE_PORT_IO 1
#else
#define POTEMKIN_HAVE_PORT_IO 0
#endif

#include "common/bytes.hpp"
#include "common/log.hpp"
#include "common/unique_fd.hpp"

namespace potemkin::devices {

namespace {

uint64_t size_mask(unsigned size) {
    return size >= 8 ? ~0ull : (1ull << (size * 8)) - 1;
}

bool passes_through(Generic::Mode m) {
    return m == Generic::Mode::passthrough || m == Generic::Mode::print_and_passthrough;
}
bool prints(Generic::Mode m) {
    return m == Generic::Mode::print_and_passthrough || m == Generic::Mode::print_and_ignore;
}

std::optional<Generic::Mode> parse_mode(std::string_view t) {
    while (!t.empty() && std::isspace(static_cast<unsigned char>(t.front()))) t.remove_prefix(1);
    while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.remove_suffix(1);
    for (auto m : {Generic::Mode::passthrough, Generic::Mode::print_and_passthrough,
                   Generic::Mode::ignore, Generic::Mode::print_and_ignore}) {
        if (t == Generic::mode_name(m)) return m;
    }
    return std::nullopt;
}

const char* space_name(vm::Space s) {
    return s == vm::Space::io ? "port" : "memory";
}

// What the user can do about a failed ioperm() or /dev/mem access: a missing privilege is
// fixable, a sandbox or kernel without the call is not, and the hint must not mislead.
std::string physical_failure(int err) {
    const char* hint = err == ENOSYS || err == ENODEV || err == ENOENT
                           ? "this kernel or sandbox does not provide it"
                           : "run as root with CAP_SYS_RAWIO";
    return fmt::format("{} ({})", std::strerror(err), hint);
}

}  // namespace

// What one hooked range needs at access time.
struct Generic::Hooked {
    const Range* range = nullptr;
    vm::RangeId bus_id = 0;
    bool ioperm_granted = false;  // physical ports: ioperm() succeeded and must be undone
    uint8_t* map = nullptr;       // physical memory: the /dev/mem mapping (page aligned)
    uint64_t map_base = 0;        // the physical address of map[0]
    uint64_t map_length = 0;
};

std::string_view Generic::mode_name(Mode m) {
    switch (m) {
        case Mode::passthrough:
            return "PASSTHROUGH";
        case Mode::print_and_passthrough:
            return "PRINT_AND_PASSTHROUGH";
        case Mode::ignore:
            return "IGNORE";
        case Mode::print_and_ignore:
            return "PRINT_AND_IGNORE";
    }
    return "?";
}

Generic::Generic(std::string id, Settings s, vm::DeviceContext& ctx)
    : Device(std::move(id)),
      ctx_(ctx),
      settings_(std::move(s)),
      link_(fmt::format("GENERIC {}", this->id()), *this, ctx) {
    if (settings_.where.empty()) settings_.where = fmt::format("GENERIC {}", this->id());
}

Generic::~Generic() {
    for (const auto& h : hooked_) {
        if (h->bus_id) {
            if (h->range->space == vm::Space::io)
                ctx_.ports.remove(h->bus_id);
            else
                ctx_.mmio.remove(h->bus_id);
        }
#if POTEMKIN_HAVE_PORT_IO
        if (h->ioperm_granted &&
            ioperm(h->range->start, h->range->end - h->range->start + 1, 0) != 0)
            log::warn("{}: dropping the port permissions for {:#x}-{:#x} failed: {}",
                      settings_.where, h->range->start, h->range->end, std::strerror(errno));
#endif
        if (h->map && munmap(h->map, h->map_length) != 0)
            log::warn("{}: munmap of /dev/mem at {:#x} failed: {}", settings_.where, h->map_base,
                      std::strerror(errno));
    }
    if (eoi_listener_) ctx_.interrupts.remove_eoi_listener(eoi_listener_);
    link_.close();  // while this object (the link's owner) is whole
}

Error Generic::device_error(std::string_view message, int sys_errno) const {
    return Error{fmt::format("{}: {}", settings_.where, message), sys_errno};
}

Result<std::unique_ptr<Generic>> Generic::create(std::string id, Settings s,
                                                 vm::DeviceContext& ctx) {
    std::unique_ptr<Generic> d(new Generic(std::move(id), std::move(s), ctx));
    POTEMKIN_TRY(d->validate());
    if (d->settings_.forward == Forward::host_device) POTEMKIN_TRY(d->open_host());
    d->settings_.element = nullptr;  // only valid while the configuration is being read
    // On a failure below, ~Generic unhooks what was hooked and closes the host device.
    for (size_t i = 0; i < d->settings_.ranges.size(); ++i) POTEMKIN_TRY(d->hook(i));
    return d;
}

Result<void> Generic::validate() const {
    const auto& rs = settings_.ranges;
    const Range* passing = nullptr;
    for (size_t i = 0; i < rs.size(); ++i) {
        const Range& r = rs[i];
        const std::string& where = r.where.empty() ? settings_.where : r.where;
        if (r.end < r.start)
            return failf("{}: <end> {:#x} is below <start> {:#x}", where, r.end, r.start);
        if (r.space == vm::Space::io && r.end > 0xffff)
            return failf("{}: port range {:#x}-{:#x} goes beyond port 0xffff", where, r.start,
                         r.end);
        // [0, 2^64-1] has a length that does not fit 64 bits, and no device needs it.
        if (r.start == 0 && r.end == ~0ull)
            return failf("{}: memory range {:#x}-{:#x} covers the whole address space", where,
                         r.start, r.end);
        for (size_t j = 0; j < i; ++j) {
            const Range& o = rs[j];
            if (o.space != r.space || r.start > o.end || o.start > r.end) continue;
            return failf("{}: {} range {:#x}-{:#x} overlaps {:#x}-{:#x} of the same device{}",
                         where, space_name(r.space), r.start, r.end, o.start, o.end,
                         o.where.empty() ? "" : fmt::format(" ({})", o.where));
        }
        if (!passing && passes_through(r.mode)) passing = &r;
    }
    if (passing && settings_.forward == Forward::none)
        return fail(device_error(fmt::format(
            "attribute 'forward' is required when a range passes accesses through ({} range "
            "{:#x}-{:#x} uses {}); use forward=\"host_device\" or forward=\"physical_device\"",
            space_name(passing->space), passing->start, passing->end, mode_name(passing->mode))));
    if (settings_.forward == Forward::host_device && settings_.hostdev.empty())
        return fail(device_error("attribute 'hostdev' is required with forward=\"host_device\""));
    if (settings_.forward == Forward::physical_device && !settings_.allow_physical)
        return fail(device_error(
            "forward=\"physical_device\" needs allow_physical=\"true\" (it gives the guest the "
            "host's real I/O ports)"));
    if (settings_.irq && *settings_.irq > 15)
        return fail(device_error(fmt::format("irq {} is not an ISA IRQ (0-15)", *settings_.irq)));
    return ok();
}

Result<void> Generic::open_host() {
    // The complete OpenContext (issue 9): without post and external_source a vfio-user
    // device's interrupts waited for the guest's next access and a halted guest ended the run.
    if (auto r = link_.open({.url = settings_.hostdev,
                             .transports = settings_.transports,
                             .element = settings_.element});
        !r)
        return fail(device_error(
            fmt::format("cannot open hostdev=\"{}\": {}", settings_.hostdev, r.error().message)));
    if (settings_.irq)
        eoi_listener_ = ctx_.interrupts.add_eoi_listener([this](unsigned line) { eoi(line); });
    return ok();
}

Result<void> Generic::hook(size_t index) {
    const Range& r = settings_.ranges[index];
    const uint64_t length = r.end - r.start + 1;
    auto hk = std::make_unique<Hooked>();
    hk->range = &r;
    Hooked* h = hk.get();
    // Registered before anything can fail, so ~Generic undoes exactly what was done.
    hooked_.push_back(std::move(hk));

    if (settings_.forward == Forward::physical_device && passes_through(r.mode)) {
        if (r.space == vm::Space::io) {
#if POTEMKIN_HAVE_PORT_IO
            if (ioperm(r.start, length, 1) != 0) {
                const int err = errno;
                return fail(device_error(fmt::format("ioperm({:#x}, {}) failed: {}", r.start,
                                                     length, physical_failure(err)),
                                         err));
            }
            h->ioperm_granted = true;
#else
            return fail(
                device_error("forward=\"physical_device\" port passthrough needs an x86 host"));
#endif
        } else {
            const long page_size = sysconf(_SC_PAGESIZE);
            const uint64_t page = page_size > 0 ? static_cast<uint64_t>(page_size) : 4096;
            const uint64_t base = r.start & ~(page - 1);
            const uint64_t map_length = ((r.end - base) | (page - 1)) + 1;
            const UniqueFd mem(open("/dev/mem", O_RDWR | O_SYNC | O_CLOEXEC));
            if (!mem) {
                const int err = errno;
                return fail(device_error(
                    fmt::format("open(/dev/mem) failed: {}", physical_failure(err)), err));
            }
            // The mapping keeps what it needs; the fd closes when `mem` goes.
            void* p = mmap(nullptr, map_length, PROT_READ | PROT_WRITE, MAP_SHARED, mem.get(),
                           static_cast<off_t>(base));
            if (p == MAP_FAILED) {
                const int err = errno;
                return fail(device_error(fmt::format("mmap(/dev/mem, {:#x}, {:#x}) failed: {}",
                                                     base, map_length, std::strerror(err)),
                                         err));
            }
            h->map = static_cast<uint8_t*>(p);
            h->map_base = base;
            h->map_length = map_length;
        }
    }

    vm::BusHandler handler{
        [this, h](uint64_t offset, unsigned size) { return read(*h, offset, size); },
        [this, h](uint64_t offset, unsigned size, uint64_t value) {
            write(*h, offset, size, value);
        }};
    auto bus_id = r.space == vm::Space::io
                      ? ctx_.ports.add(Port(static_cast<uint16_t>(r.start)), length, this->id(),
                                       std::move(handler))
                      : ctx_.mmio.add(Gpa(r.start), length, this->id(), std::move(handler));
    if (!bus_id) return fail(bus_id.error().context(r.where.empty() ? settings_.where : r.where));
    h->bus_id = *bus_id;
    return ok();
}

uint64_t Generic::read(const Hooked& h, uint64_t offset, unsigned size) {
    const uint64_t address = h.range->start + offset;
    // IGNORE reads return zeros, as Palacios' generic device does (memset 0), not all-ones.
    uint64_t value = 0;
    if (passes_through(h.range->mode)) value = forward_read(h, address, size) & size_mask(size);
    if (prints(h.range->mode)) print(h, false, address, size, value);
    return value;
}

void Generic::write(const Hooked& h, uint64_t offset, unsigned size, uint64_t value) {
    const uint64_t address = h.range->start + offset;
    if (prints(h.range->mode)) print(h, true, address, size, value);
    if (passes_through(h.range->mode)) forward_write(h, address, size, value);
}

void Generic::print(const Hooked& h, bool is_write, uint64_t address, unsigned size,
                    uint64_t value) {
    const bool io = h.range->space == vm::Space::io;
    const char* verb = io ? (is_write ? "OUT" : "IN") : (is_write ? "WRITE" : "READ");
    std::string text = fmt::format("GENERIC {}: {} {:#x} size {} {} {:#x}", id(), verb, address,
                                   size, is_write ? "<-" : "->", value);
    log::info("{}", text);
    if (ctx_.trace) ctx_.trace->note(id(), text);
}

uint64_t Generic::forward_read(const Hooked& h, uint64_t address, unsigned size) {
    const bool io = h.range->space == vm::Space::io;
    if (settings_.forward == Forward::physical_device) {
        if (io) {
#if POTEMKIN_HAVE_PORT_IO
            const auto port = static_cast<uint16_t>(address);
            switch (size) {
                case 1:
                    return inb(port);
                case 2:
                    return inw(port);
                case 4:
                    return inl(port);
                default: {
                    uint64_t v = 0;
                    for (unsigned i = 0; i < size && i < 8; ++i)
                        v |= uint64_t{inb(static_cast<uint16_t>(port + i))} << (8 * i);
                    return v;
                }
            }
#else
            return size_mask(size);
#endif
        }
        volatile uint8_t* p = h.map + (address - h.map_base);
        // One access of the guest's width, so device registers see the width they expect.
        if (size == 1) return *p;
        if (size == 2 && address % 2 == 0) return *reinterpret_cast<volatile uint16_t*>(p);
        if (size == 4 && address % 4 == 0) return *reinterpret_cast<volatile uint32_t*>(p);
        if (size == 8 && address % 8 == 0) return *reinterpret_cast<volatile uint64_t*>(p);
        std::array<uint8_t, 8> b{};
        const unsigned n = std::min(size, 8u);
        for (unsigned i = 0; i < n; ++i) b[i] = p[i];
        return load_le(std::span(b.data(), n));
    }

    return link_.read(io ? kPortRegion : kMemoryRegion, address, size);
}

void Generic::forward_write(const Hooked& h, uint64_t address, unsigned size, uint64_t value) {
    const bool io = h.range->space == vm::Space::io;
    if (settings_.forward == Forward::physical_device) {
        if (io) {
#if POTEMKIN_HAVE_PORT_IO
            const auto port = static_cast<uint16_t>(address);
            switch (size) {
                case 1:
                    outb(static_cast<uint8_t>(value), port);
                    return;
                case 2:
                    outw(static_cast<uint16_t>(value), port);
                    return;
                case 4:
                    outl(static_cast<uint32_t>(value), port);
                    return;
                default:
                    for (unsigned i = 0; i < size && i < 8; ++i)
                        outb(static_cast<uint8_t>(value >> (8 * i)),
                             static_cast<uint16_t>(port + i));
                    return;
            }
#else
            return;
#endif
        }
        volatile uint8_t* p = h.map + (address - h.map_base);
        if (size == 1) {
            *p = static_cast<uint8_t>(value);
        } else if (size == 2 && address % 2 == 0) {
            *reinterpret_cast<volatile uint16_t*>(p) = static_cast<uint16_t>(value);
        } else if (size == 4 && address % 4 == 0) {
            *reinterpret_cast<volatile uint32_t*>(p) = static_cast<uint32_t>(value);
        } else if (size == 8 && address % 8 == 0) {
            *reinterpret_cast<volatile uint64_t*>(p) = value;
        } else {
            std::array<uint8_t, 8> b{};
            const unsigned n = std::min(size, 8u);
            store_le(std::span(b.data(), n), value);
            for (unsigned i = 0; i < n; ++i) p[i] = b[i];
        }
        return;
    }

    link_.write(io ? kPortRegion : kMemoryRegion, address, size, value);
}

Generic::Stats Generic::stats() const {
    const HostLinkStats& l = link_.stats();
    return Stats{.failed_reads = l.failed_reads,
                 .failed_writes = l.failed_writes,
                 .dropped_intx = dropped_intx_,
                 .failed_acks = l.failed_acks,
                 .dropped_msi = dropped_msi_,
                 .failed_dma = l.failed_dma};
}

void Generic::intx(bool asserted) {
    if (settings_.irq) {
        ctx_.interrupts.set_irq(*settings_.irq, asserted);
        return;
    }
    ++dropped_intx_;
    if (!intx_drop_logged_) {
        intx_drop_logged_ = true;
        log::warn(
            "GENERIC {}: the host device drives INTx but no irq=\"N\" is configured; "
            "dropped (further ones are counted, not logged)",
            id());
    }
}

// The link acknowledges only while the device holds its line up and is connected.
void Generic::eoi(unsigned line) {
    if (settings_.irq && line == *settings_.irq) link_.eoi();
}

void Generic::msi(unsigned vector) {
    ++dropped_msi_;
    if (!msi_drop_logged_) {
        msi_drop_logged_ = true;
        log::warn(
            "GENERIC {}: the host device signalled MSI vector {}, which GENERIC cannot "
            "deliver (no MSI capability); dropped (further ones are counted, not logged)",
            id(), vector);
    }
}

Result<std::unique_ptr<Generic>> Generic::from_config(
    const vm::ConfigElement& e, vm::DeviceContext& ctx,
    const hostdev::TransportRegistry* transports) {
    POTEMKIN_TRY(e.only_attributes({"class", "id", "forward", "hostdev", "allow_physical", "irq"}));
    auto id = e.required("id");
    if (!id) return fail(id.error());

    Settings s;
    s.where = e.where();
    s.transports = transports;
    s.element = &e;
    if (auto f = e.attr("forward")) {
        if (*f == "host_device")
            s.forward = Forward::host_device;
        else if (*f == "physical_device")
            s.forward = Forward::physical_device;
        else
            return fail(e.attr_error(
                "forward", fmt::format("must be host_device or physical_device, not '{}'", *f)));
    }
    if (auto h = e.attr("hostdev")) {
        if (s.forward != Forward::host_device)
            return fail(e.attr_error("hostdev", "is only used with forward=\"host_device\""));
        s.hostdev = *h;
    }
    auto allow = e.boolean("allow_physical", false);
    if (!allow) return fail(allow.error());
    s.allow_physical = *allow;
    if (e.has("irq")) {
        auto irq = e.number("irq", std::nullopt, 15);
        if (!irq) return fail(irq.error());
        s.irq = static_cast<unsigned>(*irq);
    }

    for (const auto& c : e.children()) {
        Range r;
        uint64_t max = ~0ull;
        if (c.name() == "ports") {
            r.space = vm::Space::io;
            max = 0xffff;
        } else if (c.name() == "memory") {
            r.space = vm::Space::mmio;
        } else {
            return fail(c.error("unknown element inside GENERIC (expected <ports> or <memory>)"));
        }
        POTEMKIN_TRY(c.only_attributes({}));
        for (const auto& k : c.children()) {
            if (k.name() != "start" && k.name() != "end" && k.name() != "mode")
                return fail(k.error(fmt::format(
                    "unknown element inside <{}> (expected <start>, <end>, <mode>)", c.name())));
        }
        auto start = c.child_number("start", max);
        if (!start) return fail(start.error());
        auto end = c.child_number("end", max);
        if (!end) return fail(end.error());
        auto mode_el = c.child("mode");
        if (!mode_el)
            return fail(c.error(
                "missing child element <mode> (PASSTHROUGH, PRINT_AND_PASSTHROUGH, IGNORE or "
                "PRINT_AND_IGNORE)"));
        auto mode = parse_mode(mode_el->text());
        if (!mode)
            return fail(mode_el->error(
                fmt::format("unknown mode '{}' (known: PASSTHROUGH, PRINT_AND_PASSTHROUGH, IGNORE, "
                            "PRINT_AND_IGNORE)",
                            mode_el->text())));
        r.start = *start;
        r.end = *end;
        r.mode = *mode;
        r.where = c.where();
        s.ranges.push_back(std::move(r));
    }
    return create(*id, std::move(s), ctx);
}

Result<void> register_generic(vm::DeviceClassRegistry& registry,
                              const hostdev::TransportRegistry* transports) {
    return registry.add(
        "GENERIC",
        [transports](const vm::ConfigElement& e,
                     vm::DeviceContext& ctx) -> Result<std::unique_ptr<vm::Device>> {
            auto d = Generic::from_config(e, ctx, transports);
            if (!d) return fail(d.error());
            return std::unique_ptr<vm::Device>(std::move(*d));
        });
}

}  // namespace potemkin::devices

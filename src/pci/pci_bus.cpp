// PciBus: configuration mechanism #1, slot placement, BusChanges applied all-or-nothing, INTx
// routing. docs/pci-bus.md describes the behaviour; the comments here say why.
#include "pci/pci_bus.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "common/log.hpp"
#include "pci/host_bridge.hpp"
#include "pci/registers.hpp"

namespace potemkin::pci {

namespace {

constexpr uint16_t kAddressPort = 0xCF8;
constexpr uint16_t kDataPort = 0xCFC;
constexpr uint32_t kEnableBit = 1u << 31;
constexpr uint8_t kSlots = 32;
constexpr uint8_t kFunctions = 8;
constexpr uint8_t kNoLine = 0xFF;  // "unknown / no connection" in the interrupt-line register
constexpr uint64_t kResetControlOffset = 1;  // 0xCF9, in the 0xCF8-0xCFB range
constexpr uint8_t kResetSystem = 0x02;       // RC bit 1, SRST: 1 hard reset, 0 soft reset
constexpr uint8_t kResetCpu = 0x04;          // RC bit 2, RCPU: writing 1 starts the reset

uint32_t all_ones(unsigned size) {
    return size >= 4 ? 0xFFFF'FFFFu : (1u << (size * 8)) - 1;
}
bool valid_size(unsigned size) {
    return size == 1 || size == 2 || size == 4;
}

std::string bar_name(int bar) {
    return bar == kRomBarIndex ? std::string("ROM BAR") : fmt::format("BAR {}", bar);
}

// Who owns the registered range overlapping [base, base+length), for messages.
template <typename Addr>
std::string overlapping_owner(const vm::Bus<Addr>& bus, uint64_t base, uint64_t length) {
    for (const auto& r : bus.ranges())
        if (r.base.value < base + length && base < r.base.value + r.length) return r.owner;
    return "another range";
}

}  // namespace

std::string PciAddress::to_string() const {
    return fmt::format("{:02x}:{:02x}.{:x}", bus, device, function);
}

// ---- Construction ----------------------------------------------------------------------

PciBus::PciBus(std::string id, vm::DeviceContext& ctx, const PciBusSettings& settings)
    : Device(std::move(id)), ctx_(ctx), settings_(settings) {}

Result<std::unique_ptr<PciBus>> PciBus::create(std::string id, vm::DeviceContext& ctx,
                                               const PciBusSettings& settings) {
    for (size_t i = 0; i < settings.pirq_lines.size(); ++i)
        if (settings.pirq_lines[i] > 15)
            return failf("{}: PIRQ{} routed to line {}, which is not a PIC line (0-15)", id,
                         static_cast<char>('A' + i), settings.pirq_lines[i]);
    if (const auto& e = settings.ecam) {
        if (e->size < kEcamBusSize || e->size > 256 * kEcamBusSize || (e->size & (e->size - 1)))
            return failf(
                "{}: ECAM window size {:#x} is not a power of two from 1 MiB (one bus) "
                "to 256 MiB (256 buses)",
                id, e->size);
        if (e->base % e->size != 0 || e->base + e->size > kEcamLimit)
            return failf(
                "{}: ECAM window at {:#x} is not aligned to its size {:#x}, or does not "
                "end by {:#x}",
                id, e->base, e->size, kEcamLimit);
        if (settings.memory)
            for (const vm::RamRegion& r : settings.memory->regions())
                if (e->base < r.base.value + r.size && r.base.value < e->base + e->size)
                    return failf("{}: ECAM window {:#x}-{:#x} overlaps guest RAM ({:#x}-{:#x})", id,
                                 e->base, e->base + e->size - 1, r.base.value,
                                 r.base.value + r.size - 1);
    }
    auto bridge = HostBridge::create(id + ".host");
    if (!bridge) return fail(bridge.error());
    std::unique_ptr<PciBus> bus(new PciBus(std::move(id), ctx, settings));
    bus->host_bridge_ = std::move(*bridge);
    bus->functions_.emplace(PciAddress{0, 0, 0}, Attached{bus->host_bridge_.get(), {}, false});
    POTEMKIN_TRY(bus->attach());  // on error the destructor unhooks what was registered
    return bus;
}

Result<void> PciBus::attach() {
    auto a = ctx_.ports.add(
        Port(kAddressPort), 4, id(),
        {[this](uint64_t o, unsigned n) { return address_port_read(o, n); },
         [this](uint64_t o, unsigned n, uint64_t v) { address_port_write(o, n, v); }});
    if (!a) return fail(a.error());
    address_range_ = *a;
    auto d =
        ctx_.ports.add(Port(kDataPort), 4, id(),
                       {[this](uint64_t o, unsigned n) { return data_port_read(o, n); },
                        [this](uint64_t o, unsigned n, uint64_t v) { data_port_write(o, n, v); }});
    if (!d) return fail(d.error());
    data_range_ = *d;
    if (settings_.ecam) {
        auto w =
            ctx_.mmio.add(Gpa(settings_.ecam->base), settings_.ecam->size, id() + ".ecam",
                          {[this](uint64_t o, unsigned n) { return ecam_read(o, n); },
                           [this](uint64_t o, unsigned n, uint64_t v) { ecam_write(o, n, v); }});
        if (!w) return fail(w.error().context(fmt::format("{}: ECAM window", id())));
        ecam_range_ = *w;
    }
    eoi_listener_ = ctx_.interrupts.add_eoi_listener([this](unsigned line) { eoi(line); });
    return ok();
}

PciBus::~PciBus() {
    if (eoi_listener_) ctx_.interrupts.remove_eoi_listener(eoi_listener_);
    for (auto& [addr, entry] : functions_) unhook(entry);
    if (address_range_) ctx_.ports.remove(*address_range_);
    if (data_range_) ctx_.ports.remove(*data_range_);
    if (ecam_range_) ctx_.mmio.remove(*ecam_range_);
}

void PciBus::reset() {
    address_latch_ = 0;
    reset_control_ = 0;
    host_bridge_->reset();
    std::vector<PciAddress> all;
    for (const auto& [addr, entry] : functions_) all.push_back(addr);
    for (const PciAddress& a : all) function_reset(a);
}

void PciBus::function_reset(const PciAddress& addr) {
    Attached* e = find_attached(addr);
    if (!e) return;
    unhook(*e);
    for (uint8_t pin = 1; pin <= 4; ++pin)
        if (asserted_.erase({addr, pin})) drive_line(intx_line(addr, pin));
}

// ---- Placement -------------------------------------------------------------------------

PciBus::Attached* PciBus::find_attached(const PciAddress& addr) {
    auto it = functions_.find(addr);
    return it == functions_.end() ? nullptr : &it->second;
}

const PciBus::Attached* PciBus::find_attached(const PciAddress& addr) const {
    auto it = functions_.find(addr);
    return it == functions_.end() ? nullptr : &it->second;
}

bool PciBus::multi_function(uint8_t device) const {
    for (uint8_t f = 1; f < kFunctions; ++f)
        if (find_attached({0, device, f})) return true;
    return false;
}

Result<PciAddress> PciBus::add_function(PciFunction& fn, std::optional<uint8_t> slot,
                                        uint8_t function) {
    const std::string& name = fn.function_name();
    if (function >= kFunctions)
        return failf("{}: {}: function {} is out of range (0-7)", id(), name, function);
    for (const auto& [a, e] : functions_)
        if (e.fn == &fn) return failf("{}: {} is already at {}", id(), name, a.to_string());

    uint8_t device = 0;
    if (slot) {
        if (*slot == 0) return failf("{}: {}: slot 0 is the host bridge", id(), name);
        if (*slot >= kSlots)
            return failf("{}: {}: slot {} is out of range (1-31)", id(), name, *slot);
        device = *slot;
    } else {
        if (function != 0)
            return failf("{}: {}: function {} needs the slot of its function 0", id(), name,
                         function);
        // A slot without function 0 is empty: functions > 0 need function 0 to exist.
        for (uint8_t d = 1; d < kSlots && device == 0; ++d)
            if (!find_attached({0, d, 0})) device = d;
        if (device == 0) return failf("{}: {}: no free slot (1-31 are all used)", id(), name);
    }

    const PciAddress addr{0, device, function};
    if (const Attached* taken = find_attached(addr)) {
        if (function == 0)
            return failf("{}: {}: slot {} is already used by {}", id(), name, device,
                         taken->fn->function_name());
        return failf("{}: {}: slot {} function {} is already used by {}", id(), name, device,
                     function, taken->fn->function_name());
    }
    if (function != 0 && !find_attached({0, device, 0}))
        return failf("{}: {}: slot {} has no function 0 (add function 0 first)", id(), name,
                     device);
    functions_.emplace(addr, Attached{&fn, {}, false});
    log::debug("{}: {} at {}", id(), name, addr.to_string());
    return addr;
}

void PciBus::remove_function(const PciAddress& addr) {
    if (addr == PciAddress{0, 0, 0}) {
        log::warn("{}: the host bridge at 00:00.0 cannot be removed", id());
        return;
    }
    if (!find_attached(addr)) return;
    // Removing function 0 removes the whole slot: functions > 0 cannot exist without it.
    std::vector<PciAddress> doomed{addr};
    if (addr.function == 0)
        for (uint8_t f = 1; f < kFunctions; ++f)
            if (const Attached* e = find_attached({addr.bus, addr.device, f})) {
                log::warn("{}: removing {} also removes {} at {}", id(), addr.to_string(),
                          e->fn->function_name(), PciAddress{addr.bus, addr.device, f}.to_string());
                doomed.push_back({addr.bus, addr.device, f});
            }
    for (const PciAddress& a : doomed) {
        auto it = functions_.find(a);
        unhook(it->second);  // vm::Bus parks ranges whose handler is running
        functions_.erase(it);
        for (uint8_t pin = 1; pin <= 4; ++pin)
            if (asserted_.erase({a, pin})) drive_line(intx_line(a, pin));
    }
}

// ---- Configuration accesses -------------------------------------------------------------

uint32_t PciBus::config_read(const PciAddress& addr, uint32_t offset, unsigned size) {
    if (!valid_size(size)) return 0xFFFF'FFFFu;
    if ((offset & 3) + size <= 4) return read_dword_part(addr, offset, size);
    // Crosses a dword: mechanism #1 never produces this (vm::Bus splits port accesses that
    // leave 0xCFC-0xCFF); callers that do get it byte by byte, each byte in its own dword.
    uint32_t v = 0;
    for (unsigned i = 0; i < size; ++i) v |= read_dword_part(addr, offset + i, 1) << (8 * i);
    return v;
}

void PciBus::config_write(const PciAddress& addr, uint32_t offset, unsigned size, uint32_t value) {
    if (!valid_size(size)) return;
    if ((offset & 3) + size <= 4) return write_dword_part(addr, offset, size, value);
    for (unsigned i = 0; i < size; ++i)
        write_dword_part(addr, offset + i, 1, (value >> (8 * i)) & 0xFF);
}

uint32_t PciBus::read_dword_part(const PciAddress& addr, uint32_t offset, unsigned size) {
    Attached* e = addr.bus == 0 ? find_attached(addr) : nullptr;
    if (!e) return all_ones(size);  // master abort: no device answers
    uint32_t v = e->fn->config_read(offset, size) & all_ones(size);
    // Header type bit 7 on function 0 says "look at functions 1-7" (spec 3.0 section 6.2.1).
    // The bus knows the slot's population; a function does not, so the bus sets the bit.
    if (addr.function == 0 && offset <= reg::kHeaderType && reg::kHeaderType < offset + size &&
        multi_function(addr.device))
        v |= uint32_t{header_type::kMultiFunction} << (8 * (reg::kHeaderType - offset));
    return v;
}

void PciBus::write_dword_part(const PciAddress& addr, uint32_t offset, unsigned size,
                              uint32_t value) {
    Attached* e = addr.bus == 0 ? find_attached(addr) : nullptr;
    if (!e) return;  // master abort: dropped
    PciFunction* fn = e->fn;
    ConfigWriteResult r = fn->config_write(offset, size, value);
    if (r.bus.empty()) return;
    // config_write may have reached out (a remote device that went away and was removed):
    // apply only if the function is still where it was.
    e = find_attached(addr);
    if (!e || e->fn != fn) return;
    if (apply(addr, *e, r.bus)) fn->config_write_applied();
}

// ---- Applying bus changes ----------------------------------------------------------------

Result<vm::RangeId> PciBus::register_range(Attached& entry, const RangeKey& key, uint64_t length,
                                           std::string* conflict_owner) {
    const std::string& owner = entry.fn->function_name();
    if (key.space == vm::Space::io) {
        auto id = ctx_.ports.add(Port(static_cast<uint16_t>(key.base)), length, owner,
                                 entry.fn->bar_handler(key.bar));
        if (!id && conflict_owner)
            *conflict_owner = overlapping_owner(ctx_.ports, key.base, length);
        return id;
    }
    // Guest RAM is not a bus range (the engine maps it directly), so check it here.
    if (settings_.memory)
        for (const vm::RamRegion& r : settings_.memory->regions())
            if (key.base < r.base.value + r.size && r.base.value < key.base + length) {
                if (conflict_owner) *conflict_owner = "guest RAM";
                return failf("{}: MMIO range {:#x}-{:#x} overlaps guest RAM ({:#x}-{:#x})", owner,
                             key.base, key.base + length - 1, r.base.value,
                             r.base.value + r.size - 1);
            }
    auto id = ctx_.mmio.add(Gpa(key.base), length, owner, entry.fn->bar_handler(key.bar));
    if (!id && conflict_owner) *conflict_owner = overlapping_owner(ctx_.mmio, key.base, length);
    return id;
}

void PciBus::unregister_range(const RangeKey& key, vm::RangeId range) {
    if (key.space == vm::Space::io)
        ctx_.ports.remove(range);
    else
        ctx_.mmio.remove(range);
}

void PciBus::unhook(Attached& entry) {
    for (const auto& [key, reg] : entry.ranges) unregister_range(key, reg.id);
    entry.ranges.clear();
}

// All-or-nothing (kvmtool's pci_config_bar_wr, crosvm's ConfigWriteResult): removals first,
// then additions; if an addition fails, undo the additions, restore the removals and tell
// the function to restore its registers.
bool PciBus::apply(const PciAddress& addr, Attached& entry, const BusChanges& changes) {
    struct Removed {
        RangeKey key;
        uint64_t length;
    };
    std::vector<Removed> removed;
    std::vector<RangeKey> added;

    auto remove_one = [&](vm::Space space, int bar, uint64_t base) {
        const RangeKey key{space, bar, base};
        auto it = entry.ranges.find(key);
        if (it == entry.ranges.end()) return;  // not registered: nothing to undo
        unregister_range(key, it->second.id);
        removed.push_back({key, it->second.length});
        entry.ranges.erase(it);
    };
    for (const IoRange& r : changes.io_remove) remove_one(vm::Space::io, r.bar, r.base);
    for (const MmioRange& r : changes.mmio_remove) remove_one(vm::Space::mmio, r.bar, r.base);

    std::optional<RangeKey> failed;
    uint64_t failed_length = 0;
    std::string conflict, error;
    auto add_one = [&](vm::Space space, int bar, uint64_t base, uint64_t length) {
        if (failed) return;
        const RangeKey key{space, bar, base};
        if (entry.ranges.count(key)) return;  // already registered (a redundant add)
        auto range = register_range(entry, key, length, &conflict);
        if (!range) {
            failed = key;
            failed_length = length;
            error = range.error().message;
            return;
        }
        entry.ranges[key] = {*range, length};
        added.push_back(key);
    };
    for (const IoRange& r : changes.io_add) add_one(vm::Space::io, r.bar, r.base, r.length);
    for (const MmioRange& r : changes.mmio_add) add_one(vm::Space::mmio, r.bar, r.base, r.length);
    if (!failed) return true;

    for (const RangeKey& key : added) {
        auto it = entry.ranges.find(key);
        unregister_range(key, it->second.id);
        entry.ranges.erase(it);
    }
    for (const Removed& r : removed) {
        // Cannot collide: the range was registered a moment ago and nothing else changed.
        auto range = register_range(entry, r.key, r.length, nullptr);
        if (range)
            entry.ranges[r.key] = {*range, r.length};
        else
            log::error("{}: {}: could not restore {}: {}", id(), entry.fn->function_name(),
                       bar_name(r.key.bar), range.error().message);
    }
    entry.fn->config_write_rejected();
    ++rejected_writes_;

    const std::string message = fmt::format(
        "{}: config write to {} ({}) refused: {} at {:#x}-{:#x} would overlap {}; the BAR "
        "keeps its previous value and decode",
        id(), addr.to_string(), entry.fn->function_name(), bar_name(failed->bar), failed->base,
        failed->base + failed_length - 1, conflict);
    log::debug("{}: {}", id(), error);
    if (!entry.warned) {
        entry.warned = true;
        log::warn("{} (further refusals for this function are logged at debug level)", message);
    } else {
        log::debug("{}", message);
    }
    return false;
}

// ---- Mechanism #1 ports -----------------------------------------------------------------

// The latch is a dword register: only a 32-bit access at 0xCF8 reaches it. Byte and word
// accesses to 0xCF8-0xCFB pass through to the ISA bus on PC chipsets; of those, a byte at 0xCF9
// is PIIX3's reset control register, the rest behave as unassigned.
uint64_t PciBus::address_port_read(uint64_t offset, unsigned size) const {
    if (offset == 0 && size == 4) return address_latch_;
    if (offset == kResetControlOffset && size == 1) return reset_control_;
    return ~0ull;
}

void PciBus::address_port_write(uint64_t offset, unsigned size, uint64_t value) {
    if (offset == 0 && size == 4) address_latch_ = static_cast<uint32_t>(value);
    if (offset == kResetControlOffset && size == 1)
        reset_control_write(static_cast<uint8_t>(value));
}

// PIIX3 datasheet, "RC - Reset Control Register" (I/O 0CF9h): bit 1 chooses the reset type,
// writing bit 2 as 1 starts it. A hard reset asserts PCIRST# and resets the CPU, a soft reset
// is an INIT; here both are the VM reset of docs/guest-abi.md (no firmware could tell them
// apart). Only bit 1 is kept: bit 2 reads 0, as the reset it starts is already over.
void PciBus::reset_control_write(uint8_t value) {
    reset_control_ = value & kResetSystem;
    if (!(value & kResetCpu)) return;
    const char* kind = (value & kResetSystem) ? "hard" : "soft";
    if (!ctx_.request_reset) {
        log::warn("{}: {} reset requested at 0xCF9 (value {:#04x}), but nothing resets this VM",
                  id(), kind, value);
        return;
    }
    ctx_.request_reset(
        fmt::format("{} reset through the reset control register 0xCF9 ({:#04x})", kind, value));
}

std::optional<std::pair<PciAddress, uint32_t>> PciBus::latched(uint64_t data_offset) const {
    if (!(address_latch_ & kEnableBit)) return std::nullopt;
    const PciAddress addr{static_cast<uint8_t>(address_latch_ >> 16),
                          static_cast<uint8_t>((address_latch_ >> 11) & 0x1F),
                          static_cast<uint8_t>((address_latch_ >> 8) & 0x7)};
    return std::pair{addr, (address_latch_ & 0xFC) + static_cast<uint32_t>(data_offset)};
}

// vm::Bus hands this range only accesses that fit in 0xCFC-0xCFF; one that crosses 0xCFF is
// split into bytes by the bus, and the bytes at 0xD00 and above go to whoever owns them.
uint64_t PciBus::data_port_read(uint64_t offset, unsigned size) {
    auto target = latched(offset);
    if (!target || offset + size > 4) return ~0ull;
    return config_read(target->first, target->second, size);
}

void PciBus::data_port_write(uint64_t offset, unsigned size, uint64_t value) {
    auto target = latched(offset);
    if (!target || offset + size > 4) return;
    config_write(target->first, target->second, size, static_cast<uint32_t>(value));
}

// ---- ECAM -------------------------------------------------------------------------------

namespace {
// The function and register an ECAM offset selects (PCI Express Base Spec section 7.2.2,
// table 7-1): bus 27:20, device 19:15, function 14:12, register 11:0.
std::pair<PciAddress, uint32_t> ecam_decode(uint64_t offset) {
    return {
        PciAddress{static_cast<uint8_t>(offset >> 20), static_cast<uint8_t>((offset >> 15) & 0x1F),
                   static_cast<uint8_t>((offset >> 12) & 0x7)},
        static_cast<uint32_t>(offset & 0xFFF)};
}
// Accesses are 1, 2 or 4 bytes naturally aligned: the spec leaves anything crossing a dword
// undefined (section 7.2.2), so such an access reads all-ones and writes nothing here, as an
// unsupported request would.
bool ecam_access_ok(uint64_t offset, unsigned size) {
    return valid_size(size) && offset % size == 0;
}
}  // namespace

uint64_t PciBus::ecam_read(uint64_t offset, unsigned size) {
    if (!ecam_access_ok(offset, size)) return ~0ull;
    const auto [addr, reg] = ecam_decode(offset);
    return config_read(addr, reg, size);  // buses other than 0 answer all-ones
}

void PciBus::ecam_write(uint64_t offset, unsigned size, uint64_t value) {
    if (!ecam_access_ok(offset, size)) return;
    const auto [addr, reg] = ecam_decode(offset);
    // The same path as mechanism #1: the function's bus changes are applied all-or-nothing.
    config_write(addr, reg, size, static_cast<uint32_t>(value));
}

// ---- INTx ------------------------------------------------------------------------------

uint8_t PciBus::intx_line(const PciAddress& addr, uint8_t pin) const {
    if (pin < 1 || pin > 4) return kNoLine;
    // The standard swizzle for devices on bus 0 (PCI-to-PCI Bridge Architecture spec 1.2,
    // table 9-1, as QEMU's pc and kvmtool route them): INTA of slot d reaches PIRQ(d mod 4).
    const unsigned pirq = (addr.device + pin - 1u) % 4u;
    return settings_.pirq_lines[pirq];
}

std::vector<uint8_t> PciBus::assign_interrupt_lines() {
    std::vector<uint8_t> lines;
    std::vector<PciAddress> addresses;
    for (const auto& [addr, entry] : functions_) addresses.push_back(addr);
    for (const auto& addr : addresses) {
        const auto pin = static_cast<uint8_t>(config_read(addr, reg::kInterruptPin, 1));
        const uint8_t line = intx_line(addr, pin);
        if (line == kNoLine) continue;
        config_write(addr, reg::kInterruptLine, 1, line);
        if (std::find(lines.begin(), lines.end(), line) == lines.end()) lines.push_back(line);
    }
    return lines;
}

void PciBus::set_intx(const PciAddress& addr, uint8_t pin, bool asserted) {
    if (pin < 1 || pin > 4 || !find_attached(addr)) {
        log::debug("{}: INTx from {} pin {} ignored (no such function or pin)", id(),
                   addr.to_string(), pin);
        return;
    }
    if (asserted)
        asserted_.insert({addr, pin});
    else
        asserted_.erase({addr, pin});
    drive_line(intx_line(addr, pin));
}

void PciBus::eoi(unsigned line) {
    std::vector<std::pair<PciAddress, uint8_t>> targets;
    for (const auto& [a, pin] : asserted_)
        if (intx_line(a, pin) == line) targets.emplace_back(a, pin);
    // A function may deassert (or go away) in its intx_eoi(): look each one up again.
    for (const auto& [a, pin] : targets) {
        Attached* e = find_attached(a);
        if (e && asserted_.count({a, pin})) e->fn->intx_eoi(pin);
    }
}

// PCI interrupt lines are open-drain, wired-OR: the line is high while any function on it
// asserts.
void PciBus::drive_line(uint8_t line) {
    bool level = false;
    for (const auto& [a, pin] : asserted_)
        if (intx_line(a, pin) == line) level = true;
    ctx_.interrupts.set_irq(line, level);
}

// ---- Configuration ---------------------------------------------------------------------

namespace {
// ecam="0xf8000000" (the default) or "off"; ecam_size="0x100000" (the default: bus 0).
Result<std::optional<EcamSettings>> ecam_attributes(const vm::ConfigElement& e) {
    if (e.attr("ecam") == "off") {
        if (e.has("ecam_size")) return fail(e.attr_error("ecam_size", "is given but ecam=\"off\""));
        return std::optional<EcamSettings>{};
    }
    EcamSettings s;
    auto base = e.number("ecam", s.base);
    if (!base) return fail(base.error());
    auto size = e.number("ecam_size", s.size);
    if (!size) return fail(size.error());
    s.base = *base;
    s.size = *size;
    // PciBus::create checks size and alignment.
    return std::optional<EcamSettings>{s};
}
}  // namespace

Result<void> register_pci_bus(vm::DeviceClassRegistry& registry) {
    return registry.add("PCI",
                        [](const vm::ConfigElement& e,
                           vm::DeviceContext& ctx) -> Result<std::unique_ptr<vm::Device>> {
                            POTEMKIN_TRY(e.only_attributes({"class", "id", "ecam", "ecam_size"}));
                            auto id = e.required("id");
                            if (!id) return fail(id.error());
                            PciBusSettings settings;
                            settings.memory = &ctx.memory;
                            auto ecam = ecam_attributes(e);
                            if (!ecam) return fail(ecam.error());
                            settings.ecam = *ecam;
                            auto bus = PciBus::create(*id, ctx, settings);
                            if (!bus) return fail(bus.error().context(e.where()));
                            return std::unique_ptr<vm::Device>(std::move(*bus));
                        });
}

}  // namespace potemkin::pci

#include "devices/test_device.hpp"

#include "common/bytes.hpp"

namespace potemkin::devices {

namespace {

// MMIO registers past the scratch memory (docs/test-device.md).
constexpr uint64_t kRegMagic = 0x800;       // R: kMagic
constexpr uint64_t kRegPulseIrq = 0x808;    // W: raise and lower ISA line (value & 0xf)
constexpr uint64_t kRegLevelIrq = 0x80c;    // W: line (value & 0xf) to level (bit 8)
constexpr uint64_t kRegMsiAddrLo = 0x810;   // W: MSI address, low dword
constexpr uint64_t kRegMsiAddrHi = 0x814;   // W: MSI address, high dword
constexpr uint64_t kRegMsiSend = 0x818;     // W: send an MSI with this data
constexpr uint64_t kRegAccessesLo = 0x820;  // R: accesses so far (8 bytes, or low dword)
constexpr uint64_t kRegAccessesHi = 0x824;  // R: accesses so far, high dword
constexpr uint64_t kRegDmaAddress = 0x830;  // W: DMA target guest address
constexpr uint64_t kRegDmaLength = 0x834;   // W: DMA length
constexpr uint64_t kRegDmaStart = 0x838;    // W: copy scratch[0, length) to the guest
constexpr uint64_t kRegDmaStatus = 0x83c;   // R: 0 done, 1 refused by guest RAM, 2 too long
constexpr uint64_t kPortMagic = 8;          // port offset: R kMagic
constexpr uint64_t kMmioSize = 0x1000;

}  // namespace

Result<std::unique_ptr<TestDevice>> TestDevice::create(std::string id, const Settings& s,
                                                       vm::DeviceContext& ctx) {
    std::unique_ptr<TestDevice> d(new TestDevice(std::move(id), ctx));
    TestDevice* self = d.get();
    auto m =
        ctx.mmio.add(Gpa(s.mmio), kMmioSize, d->id(),
                     {[self](uint64_t o, unsigned n) { return self->mmio_read(o, n); },
                      [self](uint64_t o, unsigned n, uint64_t v) { self->mmio_write(o, n, v); }});
    if (!m) return fail(m.error());
    d->mmio_range_ = *m;
    auto p =
        ctx.ports.add(Port(s.port), 16, d->id(),
                      {[self](uint64_t o, unsigned n) { return self->port_read(o, n); },
                       [self](uint64_t o, unsigned n, uint64_t v) { self->port_write(o, n, v); }});
    if (!p) return fail(p.error());
    d->port_range_ = *p;
    return d;
}

TestDevice::~TestDevice() {
    ctx_.mmio.remove(mmio_range_);
    ctx_.ports.remove(port_range_);
}

void TestDevice::reset() {
    mmio_scratch_.fill(0);
    port_scratch_.fill(0);
    msi_address_ = 0;
}

uint64_t TestDevice::scratch_read(const uint8_t* p, unsigned size) const {
    return load_le(std::span(p, size));
}

void TestDevice::scratch_write(uint8_t* p, unsigned size, uint64_t value) {
    store_le(std::span(p, size), value);
}

uint64_t TestDevice::mmio_read(uint64_t off, unsigned size) {
    ++accesses_;
    if (off + size <= mmio_scratch_.size()) return scratch_read(&mmio_scratch_[off], size);
    if (off == kRegMagic) return kMagic;
    if (off == kRegAccessesLo) return accesses_;
    if (off == kRegAccessesHi && size == 4) return accesses_ >> 32;
    if (off == kRegDmaStatus) return dma_status_;
    return ~0ull;
}

void TestDevice::mmio_write(uint64_t off, unsigned size, uint64_t value) {
    ++accesses_;
    if (off + size <= mmio_scratch_.size()) return scratch_write(&mmio_scratch_[off], size, value);
    switch (off) {
        case kRegPulseIrq:
            ctx_.interrupts.set_irq(static_cast<unsigned>(value & 0xf), true);
            ctx_.interrupts.set_irq(static_cast<unsigned>(value & 0xf), false);
            break;
        case kRegLevelIrq:
            ctx_.interrupts.set_irq(static_cast<unsigned>(value & 0xf), (value >> 8) & 1);
            break;
        case kRegMsiAddrLo:
            msi_address_ = (msi_address_ & ~0xffff'ffffull) | (value & 0xffff'ffff);
            break;
        case kRegMsiAddrHi:
            msi_address_ = (msi_address_ & 0xffff'ffff) | (value << 32);
            break;
        case kRegMsiSend:
            ctx_.interrupts.send_msi(msi_address_, static_cast<uint32_t>(value));
            break;
        case kRegDmaAddress:
            dma_address_ = static_cast<uint32_t>(value);
            break;
        case kRegDmaLength:
            dma_length_ = static_cast<uint32_t>(value);
            break;
        case kRegDmaStart:
            dma_to_guest();
            break;
        default:
            break;
    }
}

// Copy scratch[0, length) to guest memory. A bad request is refused, never a crash; the guest
// sees the status in kRegDmaStatus.
void TestDevice::dma_to_guest() {
    if (dma_length_ > mmio_scratch_.size()) {
        dma_status_ = 2;
        return;
    }
    auto r = ctx_.memory.write(Gpa(dma_address_),
                               std::span<const uint8_t>(mmio_scratch_.data(), dma_length_));
    dma_status_ = r ? 0 : 1;
}

uint64_t TestDevice::port_read(uint64_t off, unsigned size) {
    ++accesses_;
    if (off + size <= port_scratch_.size()) return scratch_read(&port_scratch_[off], size);
    if (off == kPortMagic) return kMagic;
    return ~0ull;
}

void TestDevice::port_write(uint64_t off, unsigned size, uint64_t value) {
    ++accesses_;
    if (off + size <= port_scratch_.size()) scratch_write(&port_scratch_[off], size, value);
}

Result<void> register_test_device(vm::DeviceClassRegistry& registry) {
    return registry.add("TEST_DEVICE",
                        [](const vm::ConfigElement& e,
                           vm::DeviceContext& ctx) -> Result<std::unique_ptr<vm::Device>> {
                            POTEMKIN_TRY(e.only_attributes({"class", "id", "port", "mmio"}));
                            TestDevice::Settings s;
                            auto port = e.number("port", s.port, 0xfff0);
                            if (!port) return fail(port.error());
                            auto mmio = e.number("mmio", s.mmio);
                            if (!mmio) return fail(mmio.error());
                            if (*mmio % 0x1000)
                                return fail(e.attr_error("mmio", "must be 4 KiB aligned"));
                            s.port = static_cast<uint16_t>(*port);
                            s.mmio = *mmio;
                            auto d = TestDevice::create(*e.attr("id"), s, ctx);
                            if (!d) return fail(d.error().context(e.where()));
                            return std::unique_ptr<vm::Device>(std::move(*d));
                        });
}

}  // namespace potemkin::devices

// ModelServer and the inproc transport, driven through the HostDevice interface the VMM sees:
// config space built from the spec, BAR sizing, regions, the MSI-X table served by the
// server, interrupt modes, bounds, close and reset. Uses the multibar model plus small test
// models.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "hostdev/host_device.hpp"
#include "inproc/transport.hpp"
#include "models/builtin.hpp"
#include "models/multibar.hpp"
#include "pci/capabilities.hpp"
#include "pci/express.hpp"
#include "pci/registers.hpp"
#include "sdk/model_server.hpp"
#include "sdk/params.hpp"

namespace potemkin::sdk {
namespace {

using hostdev::IrqKind;
using inproc::InprocHostDevice;
using inproc::register_inproc_transport;
using models::Multibar;

class RecordingEvents final : public hostdev::HostDeviceEvents {
  public:
    void intx(bool asserted) override { intx_log.push_back(asserted); }
    void msi(unsigned vector) override { msi_log.push_back(vector); }
    Result<void> dma_read(uint64_t a, std::span<uint8_t> out) override {
        if (a > ram.size() || out.size() > ram.size() - a) return failf("DMA read at {:#x}", a);
        std::memcpy(out.data(), ram.data() + a, out.size());
        return ok();
    }
    Result<void> dma_write(uint64_t a, std::span<const uint8_t> in) override {
        if (a > ram.size() || in.size() > ram.size() - a) return failf("DMA write at {:#x}", a);
        std::memcpy(ram.data() + a, in.data(), in.size());
        return ok();
    }
    void disconnected(std::string_view) override {}

    std::vector<bool> intx_log;
    std::vector<unsigned> msi_log;
    std::vector<uint8_t> ram = std::vector<uint8_t>(64 * 1024, 0);
};

class MultibarTest : public ::testing::Test {
  protected:
    void SetUp() override { dev = open("inproc:multibar"); }

    std::unique_ptr<hostdev::HostDevice> open(const std::string& url) {
        if (transports.schemes().empty()) {
            EXPECT_TRUE(models::register_builtin_models(models));
            EXPECT_TRUE(register_inproc_transport(transports, models));
        }
        auto d = transports.open(url, {&events});
        EXPECT_TRUE(d) << d.error().message;
        return d ? std::move(d).value() : nullptr;
    }

    uint32_t cfg(uint32_t offset, unsigned size = 4) {
        uint8_t b[4] = {0xFF, 0xFF, 0xFF, 0xFF};
        auto r = dev->config_read(offset, std::span(b, size));
        EXPECT_TRUE(r) << r.error().message;
        uint32_t v = 0;
        for (unsigned i = 0; i < size; ++i) v |= uint32_t{b[i]} << (8 * i);
        return v;
    }
    void cfg_write(uint32_t offset, uint32_t value, unsigned size = 4) {
        uint8_t b[4];
        for (unsigned i = 0; i < 4; ++i) b[i] = static_cast<uint8_t>(value >> (8 * i));
        auto r = dev->config_write(offset, std::span<const uint8_t>(b, size));
        EXPECT_TRUE(r) << r.error().message;
    }
    uint64_t rd(uint32_t region, uint64_t offset, unsigned size) {
        uint8_t b[8] = {};
        auto r = dev->region_read(region, offset, std::span(b, size));
        EXPECT_TRUE(r) << r.error().message;
        uint64_t v = 0;
        for (unsigned i = 0; i < size; ++i) v |= uint64_t{b[i]} << (8 * i);
        return v;
    }
    void wr(uint32_t region, uint64_t offset, unsigned size, uint64_t value) {
        uint8_t b[8];
        for (unsigned i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(value >> (8 * i));
        auto r = dev->region_write(region, offset, std::span<const uint8_t>(b, size));
        EXPECT_TRUE(r) << r.error().message;
    }

    ModelRegistry models;
    hostdev::TransportRegistry transports;
    RecordingEvents events;
    std::unique_ptr<hostdev::HostDevice> dev;
};

TEST_F(MultibarTest, ConfigSpaceCarriesIdsClassAndPin) {
    EXPECT_EQ(cfg(pci::reg::kVendorId, 2), 0x1b36u);
    EXPECT_EQ(cfg(pci::reg::kDeviceId, 2), 0xff01u);
    EXPECT_EQ(cfg(pci::reg::kRevisionId, 1), 0x01u);
    EXPECT_EQ(cfg(pci::reg::kRevisionId) >> 8, 0x00ff00u);
    EXPECT_EQ(cfg(pci::reg::kSubsystemVendorId, 2), 0x1b36u);
    EXPECT_EQ(cfg(pci::reg::kInterruptPin, 1), 1u);
    EXPECT_NE(cfg(pci::reg::kStatus, 2) & pci::status::kCapabilitiesList, 0u);
    auto info = dev->info();
    ASSERT_TRUE(info);
    EXPECT_EQ(info->name, "multibar");
    EXPECT_EQ(info->num_regions, hostdev::kPciRegionCount);
    EXPECT_TRUE(info->reset_supported);
}

TEST_F(MultibarTest, CapabilitiesListHasMsiAndMsix) {
    std::vector<uint8_t> bytes(256);
    ASSERT_TRUE(dev->config_read(0, bytes));
    pci::ConfigSpace cs;
    ASSERT_TRUE(cs.set_bytes(0, bytes));
    auto caps = pci::walk_capabilities(cs);
    ASSERT_TRUE(caps) << caps.error().message;
    ASSERT_EQ(caps->size(), 2u);
    EXPECT_EQ((*caps)[0].id, pci::cap_id::kMsi);
    EXPECT_EQ((*caps)[1].id, pci::cap_id::kMsix);
    const auto msix = pci::read_msix(cs, (*caps)[1].offset);
    EXPECT_EQ(msix.vectors, 4u);
    EXPECT_EQ(msix.table_bir, 1);
    EXPECT_EQ(msix.table_offset, 0x800u);
    EXPECT_EQ(msix.pba_offset, 0xC00u);
}

TEST_F(MultibarTest, BarSizingWithAllOnesReadsBackTheSizeMask) {
    const std::pair<uint32_t, uint32_t> expected[] = {
        {pci::reg::bar(0), 0xFFFFFFE1},  // I/O, 32 ports
        {pci::reg::bar(1), 0xFFFFF000},  // MEM32, 4 KiB
        {pci::reg::bar(2), 0xFFF0000C},  // MEM64 prefetchable, 1 MiB, low half
        {pci::reg::bar(3), 0xFFFFFFFF},  // high half
        {pci::reg::bar(4), 0x00000000},  // unimplemented
        {pci::reg::bar(5), 0x00000000},
        {pci::reg::kRomBar, 0xFFFFF001},  // ROM, 4 KiB, enable bit written 1
    };
    for (auto [offset, mask] : expected) {
        cfg_write(offset, 0xFFFFFFFF);
        EXPECT_EQ(cfg(offset), mask) << "offset " << offset;
    }
}

TEST_F(MultibarTest, RegionInfoFollowsTheSpec) {
    const struct {
        uint32_t index;
        std::optional<pci::BarKind> kind;
        uint64_t size;
        bool writable, prefetchable;
    } expected[] = {
        {0, pci::BarKind::io, 32, true, false},
        {1, pci::BarKind::mem32, 4096, true, false},
        {2, pci::BarKind::mem64, 1 << 20, true, true},
        {3, std::nullopt, 0, false, false},
        {4, std::nullopt, 0, false, false},
        {5, std::nullopt, 0, false, false},
        {6, pci::BarKind::rom, 4096, false, false},
        {7, std::nullopt, 256, true, false},
    };
    for (const auto& e : expected) {
        auto ri = dev->region_info(e.index);
        ASSERT_TRUE(ri) << ri.error().message;
        EXPECT_EQ(ri->index, e.index);
        EXPECT_EQ(ri->bar_kind, e.kind) << e.index;
        EXPECT_EQ(ri->size, e.size) << e.index;
        EXPECT_EQ(ri->writable, e.writable) << e.index;
        EXPECT_EQ(ri->prefetchable, e.prefetchable) << e.index;
        if (e.index == 2) {
            // BAR2 is mappable shared memory: one area, the whole BAR, with its memfd.
            ASSERT_EQ(ri->mmap_areas.size(), 1u);
            EXPECT_EQ(ri->mmap_areas[0].offset, 0u);
            EXPECT_EQ(ri->mmap_areas[0].size, e.size);
            EXPECT_GE(ri->fd, 0);
        } else {
            EXPECT_TRUE(ri->mmap_areas.empty()) << e.index;
            EXPECT_EQ(ri->fd, -1) << e.index;
        }
    }
    auto bad = dev->region_info(8);
    ASSERT_FALSE(bad);
    EXPECT_NE(bad.error().message.find("no region 8"), std::string::npos);
}

TEST_F(MultibarTest, Mem24BarOnRequest) {
    dev = open("inproc:multibar?mem24=1");
    auto ri = dev->region_info(4);
    ASSERT_TRUE(ri);
    EXPECT_EQ(ri->bar_kind, pci::BarKind::mem24);
    cfg_write(pci::reg::bar(4), 0xFFFFFFFF);
    EXPECT_EQ(cfg(pci::reg::bar(4)), 0xFFFFF002u);
}

// PCI Firmware Specification 3.x section 5.1: what Linux's pci_get_rom_size() and sysfs `rom`
// check (0x55AA, the PCIR signature through the pointer at 0x18, vendor and device, the image
// length and the last-image bit), read through the ROM region as a VMM reads it.
TEST_F(MultibarTest, RomIsAValidPciExpansionRomImage) {
    std::vector<uint8_t> rom(Multibar::kRomSize);
    ASSERT_TRUE(dev->region_read(hostdev::kRomRegion, 0, std::span(rom)));
    auto u16 = [&](size_t at) { return static_cast<uint32_t>(rom[at] | rom[at + 1] << 8); };
    EXPECT_EQ(u16(0), 0xAA55u);
    EXPECT_EQ(rom[2], Multibar::kRomSize / 512);
    const size_t p = u16(0x18);
    EXPECT_EQ(p, Multibar::kRomPcirOffset);
    EXPECT_EQ(p % 4, 0u);  // SeaBIOS ignores a misaligned data structure
    EXPECT_EQ(std::string(rom.begin() + p, rom.begin() + p + 4), "PCIR");
    EXPECT_EQ(u16(p + 4), cfg(pci::reg::kVendorId, 2));
    EXPECT_EQ(u16(p + 6), cfg(pci::reg::kDeviceId, 2));
    EXPECT_EQ(u16(p + 0x0A), 0x1Cu);  // structure length, revision 3
    EXPECT_EQ(rom[p + 0x0C], 3);
    EXPECT_EQ(
        rom[p + 0x0D] | rom[p + 0x0E] << 8 | rom[p + 0x0F] << 16,
        static_cast<int>(cfg(pci::reg::kClassCode, 1) | cfg(pci::reg::kClassCode + 1, 2) << 8));
    EXPECT_EQ(u16(p + 0x10), Multibar::kRomSize / 512);  // image length, 512-byte units
    EXPECT_EQ(rom[p + 0x14], 0xFF);                      // code type: no firmware runs it
    EXPECT_EQ(rom[p + 0x15] & 0x80, 0x80);               // last image
    uint8_t sum = 0;
    for (uint8_t b : rom) sum = static_cast<uint8_t>(sum + b);
    EXPECT_EQ(sum, 0);  // the legacy checksum
}

TEST_F(MultibarTest, RomRegionReadsSignatureAndString) {
    EXPECT_EQ(rd(hostdev::kRomRegion, 0, 2), 0xAA55u);
    EXPECT_EQ(rd(hostdev::kRomRegion, 2, 1), 8u);
    std::string s(std::strlen(Multibar::kRomString), '\0');
    ASSERT_TRUE(dev->region_read(hostdev::kRomRegion, Multibar::kRomStringOffset,
                                 std::span(reinterpret_cast<uint8_t*>(s.data()), s.size())));
    EXPECT_EQ(s, Multibar::kRomString);
    const uint8_t b = 0;
    auto w = dev->region_write(hostdev::kRomRegion, 0, std::span(&b, 1));
    ASSERT_FALSE(w);
    EXPECT_NE(w.error().message.find("read-only"), std::string::npos);
}

TEST_F(MultibarTest, IoBarIdAndScratch) {
    EXPECT_EQ(rd(0, 0, 4), Multibar::kId);
    EXPECT_EQ(rd(0, 4, 4), Multibar::kVersion);
    wr(0, 0, 4, 0x12345678);  // read-only head
    EXPECT_EQ(rd(0, 0, 4), Multibar::kId);
    wr(0, 0x10, 2, 0xBEEF);
    EXPECT_EQ(rd(0, 0x10, 2), 0xBEEFu);
    EXPECT_EQ(rd(0, 0x11, 1), 0xBEu);
}

TEST_F(MultibarTest, Mem64PatternAndSeedParameter) {
    EXPECT_EQ(rd(2, 0x100, 4), 0x100u ^ 0x5eed0000u);
    EXPECT_EQ(rd(2, 0xFFFFC, 4), 0xFFFFCu ^ 0x5eed0000u);
    wr(2, 0x100, 8, 0x1122334455667788);
    EXPECT_EQ(rd(2, 0x100, 8), 0x1122334455667788u);
    dev = open("inproc:multibar?seed=0x1");
    EXPECT_EQ(rd(2, 0x100, 4), 0x101u);
}

TEST_F(MultibarTest, Bar1WindowShowsTheBar2DwordTheModelSees) {
    EXPECT_EQ(rd(1, Multibar::kRegBar2Peek, 4), 0u ^ 0x5eed0000u);
    wr(2, 0x2340, 4, 0xfeedf00d);
    wr(1, Multibar::kRegBar2Window, 4, 0x2340);
    EXPECT_EQ(rd(1, Multibar::kRegBar2Window, 4), 0x2340u);
    EXPECT_EQ(rd(1, Multibar::kRegBar2Peek, 4), 0xfeedf00du);
    wr(1, Multibar::kRegBar2Window, 4, 0xfff02346);  // beyond 1 MiB, unaligned: masked
    EXPECT_EQ(rd(1, Multibar::kRegBar2Window, 4), 0x2344u);
    EXPECT_EQ(rd(1, Multibar::kRegBar2Peek, 4), 0x2344u ^ 0x5eed0000u);
}

TEST_F(MultibarTest, BulkReadCoversEveryByte) {
    std::vector<uint8_t> buf(4096);
    ASSERT_TRUE(dev->region_read(2, 0x3, buf));
    for (size_t i = 0; i < buf.size(); ++i) {
        const uint64_t at = 0x3 + i;
        const uint32_t dword = static_cast<uint32_t>(at & ~uint64_t{3}) ^ 0x5eed0000u;
        ASSERT_EQ(buf[i], static_cast<uint8_t>(dword >> (8 * (at & 3)))) << i;
    }
}

TEST_F(MultibarTest, MsixTableIsServedByTheServerNotTheModel) {
    // Entries start masked (vector control bit 0); the model's BAR1 would read 0 there.
    EXPECT_EQ(rd(1, 0x800 + 0xC, 4), 1u);
    wr(1, 0x810, 8, 0xFEE00000);  // entry 1 address
    wr(1, 0x818, 4, 0x41);        // entry 1 data
    EXPECT_EQ(rd(1, 0x810, 4), 0xFEE00000u);
    EXPECT_EQ(rd(1, 0x818, 4), 0x41u);
    EXPECT_EQ(rd(1, 0xC00, 8), 0u);
}

// A front-end that emulates the MSI-X table (devices::PciFront, VFIO, vfio-user clients) never
// forwards table writes, so the server's entries stay masked at reset; with server-side
// masking on by default every MSI-X interrupt of an inproc device was lost.
TEST_F(MultibarTest, InprocMsixIsDeliveredAlthoughServerTableEntriesStayMasked) {
    ASSERT_TRUE(dev->set_irqs(IrqKind::msix, 4));
    wr(1, Multibar::kRegDoorbell, 4, 2);
    EXPECT_EQ(events.msi_log, std::vector<unsigned>{2});
    EXPECT_EQ(rd(1, 0xC00, 8), 0u);
}

// Server-side masking (ModelServerSettings::msix_masking), driven through region accesses.
class MaskingServerTest : public ::testing::Test {
  protected:
    void SetUp() override {
        auto s = ModelServer::create(std::make_unique<Multibar>(), &events,
                                     ModelServerSettings{.msix_masking = true});
        ASSERT_TRUE(s) << s.error().message;
        server = std::move(s).value();
    }
    uint64_t rd(uint64_t offset, unsigned size) {
        uint8_t b[8] = {};
        EXPECT_TRUE(server->region_read(1, offset, std::span(b, size)));
        uint64_t v = 0;
        for (unsigned i = 0; i < size; ++i) v |= uint64_t{b[i]} << (8 * i);
        return v;
    }
    void wr(uint64_t offset, unsigned size, uint64_t value) {
        uint8_t b[8];
        for (unsigned i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(value >> (8 * i));
        EXPECT_TRUE(server->region_write(1, offset, std::span<const uint8_t>(b, size)));
    }
    void cfg_control(uint16_t value) {
        const auto cap = pci::find_capability(server->config_space(), pci::cap_id::kMsix);
        ASSERT_TRUE(cap);
        const uint8_t b[2] = {static_cast<uint8_t>(value), static_cast<uint8_t>(value >> 8)};
        ASSERT_TRUE(server->config_write(*cap + pci::msix::kControl, b));
    }
    RecordingEvents events;
    std::unique_ptr<ModelServer> server;
};

TEST_F(MaskingServerTest, MaskedVectorGoesPendingAndIsSentOnUnmask) {
    ASSERT_TRUE(server->set_irqs(IrqKind::msix, 4));
    wr(Multibar::kRegDoorbell, 4, 1);  // vector 1, masked: pending, not sent
    EXPECT_TRUE(events.msi_log.empty());
    EXPECT_EQ(rd(0xC00, 8), 0x2u);
    wr(0xC00, 8, 0);  // the PBA is read-only
    EXPECT_EQ(rd(0xC00, 8), 0x2u);

    wr(0x81C, 4, 0);  // unmask entry 1: the pending vector goes out
    EXPECT_EQ(events.msi_log, std::vector<unsigned>{1});
    EXPECT_EQ(rd(0xC00, 8), 0u);

    wr(Multibar::kRegDoorbell, 4, 1);
    EXPECT_EQ(events.msi_log, (std::vector<unsigned>{1, 1}));
}

TEST_F(MaskingServerTest, FunctionMaskInConfigSpaceHoldsVectorsPending) {
    wr(0x80C, 4, 0);  // unmask entry 0
    ASSERT_TRUE(server->set_irqs(IrqKind::msix, 4));
    cfg_control(pci::msix::kEnable | pci::msix::kFunctionMask);
    wr(Multibar::kRegDoorbell, 4, 0);
    EXPECT_TRUE(events.msi_log.empty());
    EXPECT_EQ(rd(0xC00, 8), 0x1u);
    cfg_control(pci::msix::kEnable);
    EXPECT_EQ(events.msi_log, std::vector<unsigned>{0});
}

TEST_F(MaskingServerTest, PendingVectorIsSentWhenMsixIsEnabledAgainBySetIrqs) {
    wr(0x80C, 4, 0);
    ASSERT_TRUE(server->set_irqs(IrqKind::msix, 4));
    cfg_control(pci::msix::kEnable | pci::msix::kFunctionMask);
    wr(Multibar::kRegDoorbell, 4, 0);
    ASSERT_TRUE(server->set_irqs(IrqKind::msix, 0));  // disabled: pending is kept
    cfg_control(0);
    EXPECT_TRUE(events.msi_log.empty());
    ASSERT_TRUE(server->set_irqs(IrqKind::msix, 4));
    EXPECT_EQ(events.msi_log, std::vector<unsigned>{0});
}

TEST_F(MultibarTest, MsiVectorsBeyondTheEnabledCountAreDroppedAndCounted) {
    auto* inproc = dynamic_cast<InprocHostDevice*>(dev.get());
    ASSERT_NE(inproc, nullptr);
    wr(1, Multibar::kRegDoorbell, 4, 0);  // INTx mode: no MSI
    ASSERT_TRUE(dev->set_irqs(IrqKind::msi, 2));
    wr(1, Multibar::kRegDoorbell, 4, 1);
    wr(1, Multibar::kRegDoorbell, 4, 2);  // only 2 enabled: dropped
    EXPECT_EQ(events.msi_log, std::vector<unsigned>{1});
    EXPECT_EQ(inproc->server()->dropped_msi(), 1u);
    EXPECT_EQ(inproc->server()->msi_vectors(), 2u);
    EXPECT_FALSE(dev->set_irqs(IrqKind::msi, 8));  // capable of 4
    ASSERT_TRUE(dev->set_irqs(IrqKind::msi, 0));
    EXPECT_EQ(inproc->server()->irq_mode(), IrqMode::intx);
}

TEST_F(MultibarTest, IntxFollowsLevelInterruptDisableAndMode) {
    wr(1, Multibar::kRegDoorbell, 4, 3);
    EXPECT_EQ(events.intx_log, std::vector<bool>{true});
    EXPECT_NE(cfg(pci::reg::kStatus, 2) & pci::status::kInterruptStatus, 0u);
    EXPECT_EQ(rd(1, Multibar::kRegIrqStatus, 4), 0x8u);

    cfg_write(pci::reg::kCommand, pci::command::kInterruptDisable, 2);
    EXPECT_EQ(events.intx_log, (std::vector<bool>{true, false}));
    // Status still shows the condition: it does not depend on Interrupt Disable.
    EXPECT_NE(cfg(pci::reg::kStatus, 2) & pci::status::kInterruptStatus, 0u);
    cfg_write(pci::reg::kCommand, 0, 2);
    EXPECT_EQ(events.intx_log, (std::vector<bool>{true, false, true}));

    ASSERT_TRUE(dev->ack_intx());  // still asserted: resampled
    EXPECT_EQ(events.intx_log, (std::vector<bool>{true, false, true, true}));

    ASSERT_TRUE(dev->set_irqs(IrqKind::msix, 4));  // leaving INTx drops the line
    EXPECT_EQ(events.intx_log.back(), false);
    ASSERT_TRUE(dev->set_irqs(IrqKind::intx, 0));  // back: the condition persists
    EXPECT_EQ(events.intx_log.back(), true);

    wr(1, Multibar::kRegIrqAck, 4, 0x8);
    EXPECT_EQ(events.intx_log.back(), false);
    EXPECT_EQ(cfg(pci::reg::kStatus, 2) & pci::status::kInterruptStatus, 0u);
}

TEST_F(MultibarTest, OutOfBoundsAccessesNameRegionAndOffset) {
    uint8_t b[8] = {};
    auto r = dev->region_read(1, 0xFFE, std::span(b, 4));
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("offset 0xffe"), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find("BAR1"), std::string::npos) << r.error().message;
    EXPECT_FALSE(dev->region_write(0, 32, std::span<const uint8_t>(b, 1)));
    // Offset near 2^64: offset + length must not wrap into range.
    EXPECT_FALSE(dev->region_read(2, ~uint64_t{0} - 1, std::span(b, 4)));
    auto absent = dev->region_read(3, 0, std::span(b, 4));
    ASSERT_FALSE(absent);
    EXPECT_NE(absent.error().message.find("not implemented"), std::string::npos);
    EXPECT_FALSE(dev->region_read(8, 0, std::span(b, 4)));
    EXPECT_FALSE(dev->config_read(0xFE, std::span(b, 4)));
    EXPECT_FALSE(dev->config_write(0x100, std::span<const uint8_t>(b, 1)));
    EXPECT_TRUE(dev->region_read(1, 0xFFC, std::span(b, 4)));
    EXPECT_TRUE(dev->region_read(1, 0x1000, std::span(b, 0)));
}

TEST_F(MultibarTest, ConfigRegionSevenIsConfigSpace) {
    EXPECT_EQ(rd(hostdev::kConfigRegion, 0, 4), 0xff011b36u);
    wr(hostdev::kConfigRegion, pci::reg::kInterruptLine, 1, 11);
    EXPECT_EQ(cfg(pci::reg::kInterruptLine, 1), 11u);
}

TEST_F(MultibarTest, CloseIsIdempotentAndLaterCallsFail) {
    dev->close();
    dev->close();
    uint8_t b[4];
    auto r = dev->region_read(1, 0, std::span(b, 4));
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("inproc:multibar: device is closed"), std::string::npos)
        << r.error().message;
    EXPECT_FALSE(dev->info());
    EXPECT_FALSE(dev->config_read(0, std::span(b, 4)));
    EXPECT_FALSE(dev->set_irqs(IrqKind::intx, 1));
    EXPECT_FALSE(dev->ack_intx());
    EXPECT_FALSE(dev->reset());
}

TEST_F(MultibarTest, ResetRestoresConfigTableAndModel) {
    cfg_write(pci::reg::kCommand, pci::command::kMemorySpace | pci::command::kBusMaster, 2);
    cfg_write(pci::reg::bar(1), 0xE0000000);
    wr(0, 0x08, 4, 0xCAFEF00D);
    wr(2, 0, 4, 0);
    wr(1, 0x80C, 4, 0);
    ASSERT_TRUE(dev->set_irqs(IrqKind::msix, 4));
    ASSERT_TRUE(dev->reset());
    EXPECT_EQ(cfg(pci::reg::kCommand, 2), 0u);
    EXPECT_EQ(cfg(pci::reg::bar(1)), 0u);
    EXPECT_EQ(rd(0, 0x08, 4), 0u);
    EXPECT_EQ(rd(2, 0, 4), 0x5eed0000u);
    EXPECT_EQ(rd(1, 0x80C, 4), 1u);  // masked again
    auto* inproc = dynamic_cast<InprocHostDevice*>(dev.get());
    EXPECT_EQ(inproc->server()->irq_mode(), IrqMode::intx);
}

TEST_F(MultibarTest, UnknownModelAndParameterErrors) {
    auto d = transports.open("inproc:nosuch", {&events});
    ASSERT_FALSE(d);
    EXPECT_EQ(d.error().message,
              "hostdev URL 'inproc:nosuch': unknown device model 'nosuch' (known: edu, multibar)");
    auto p = transports.open("inproc:multibar?sede=1", {&events});
    ASSERT_FALSE(p);
    EXPECT_NE(p.error().message.find("unknown parameter 'sede' (known: seed, mem24, mmap, pcie)"),
              std::string::npos)
        << p.error().message;
    EXPECT_FALSE(transports.open("inproc:multibar?seed=0x1zz", {&events}));
    EXPECT_FALSE(transports.open("inproc:multibar?mem24=maybe", {&events}));
    EXPECT_FALSE(register_inproc_transport(transports, models));  // already there
}

// ---- Small test models ----------------------------------------------------------------------

// Records every BAR access the server hands it.
class Recorder final : public DeviceModel {
  public:
    explicit Recorder(DeviceSpec s) : spec_(std::move(s)) {}
    const DeviceSpec& spec() const override { return spec_; }
    uint64_t bar_read(int bar, uint64_t offset, unsigned size) override {
        log.push_back({bar, offset, size});
        return 0;
    }
    void bar_write(int bar, uint64_t offset, unsigned size, uint64_t) override {
        log.push_back({bar, offset, size});
    }
    void reset() override {}
    struct Access {
        int bar;
        uint64_t offset;
        unsigned size;
        bool operator==(const Access&) const = default;
    };
    std::vector<Access> log;

  private:
    DeviceSpec spec_;
};

DeviceSpec basic_spec() {
    DeviceSpec s;
    s.name = "rec";
    s.header.vendor_id = 0x1234;
    s.header.device_id = 0x0001;
    s.bars[0] = BarSpec{pci::BarKind::mem32, 4096, false};
    return s;
}

TEST(ModelServer, BulkAccessesSplitIntoNaturallyAlignedChunks) {
    RecordingEvents events;
    auto model = std::make_unique<Recorder>(basic_spec());
    auto* rec = model.get();
    auto server = ModelServer::create(std::move(model), &events);
    ASSERT_TRUE(server) << server.error().message;
    std::vector<uint8_t> buf(15);
    ASSERT_TRUE((*server)->region_read(0, 1, buf));
    using A = Recorder::Access;
    EXPECT_EQ(rec->log, (std::vector<A>{{0, 1, 1}, {0, 2, 2}, {0, 4, 4}, {0, 8, 8}}));
    rec->log.clear();
    // A single 1/2/4/8-byte access goes through as one call, aligned or not.
    std::vector<uint8_t> four(4);
    ASSERT_TRUE((*server)->region_write(0, 3, four));
    EXPECT_EQ(rec->log, (std::vector<A>{{0, 3, 4}}));
    rec->log.clear();
    std::vector<uint8_t> three(3);
    ASSERT_TRUE((*server)->region_write(0, 6, three));
    EXPECT_EQ(rec->log, (std::vector<A>{{0, 6, 2}, {0, 8, 1}}));
}

TEST(ModelServer, RomIsPaddedToAPowerOfTwoOfAtLeast2KiB) {
    RecordingEvents events;
    for (auto [image, region] : {std::pair<size_t, uint64_t>{100, 2048}, {3000, 4096}}) {
        DeviceSpec s = basic_spec();
        s.rom.assign(image, 0xEE);
        auto server = ModelServer::create(std::make_unique<Recorder>(s), &events);
        ASSERT_TRUE(server) << server.error().message;
        auto ri = (*server)->region_info(hostdev::kRomRegion);
        ASSERT_TRUE(ri);
        EXPECT_EQ(ri->size, region);
        uint8_t b[2];
        ASSERT_TRUE((*server)->region_read(hostdev::kRomRegion, image - 1, std::span(b, 2)));
        EXPECT_EQ(b[0], 0xEE);
        EXPECT_EQ(b[1], 0x00);
    }
}

TEST(ModelServer, InvalidSpecsAreRejectedNamingTheModel) {
    RecordingEvents events;
    auto bad = [&](DeviceSpec s) {
        auto server = ModelServer::create(std::make_unique<Recorder>(std::move(s)), &events);
        EXPECT_FALSE(server);
        return server ? std::string() : server.error().message;
    };
    DeviceSpec table_outside = basic_spec();
    table_outside.msix = MsixSpec{4, 0, 0xFF8, 0x800};
    EXPECT_NE(bad(table_outside).find("device model 'rec': MSI-X"), std::string::npos);
    DeviceSpec io_table = basic_spec();
    io_table.bars[1] = BarSpec{pci::BarKind::io, 256, false};
    io_table.msix = MsixSpec{1, 1, 0, 0x80};
    EXPECT_NE(bad(io_table).find("I/O BAR"), std::string::npos);
    DeviceSpec overlap = basic_spec();
    overlap.msix = MsixSpec{4, 0, 0x0, 0x20};
    EXPECT_NE(bad(overlap).find("overlap"), std::string::npos);
    DeviceSpec no_bar = basic_spec();
    no_bar.msix = MsixSpec{4, 2, 0, 0x800};
    EXPECT_NE(bad(no_bar).find("not implemented"), std::string::npos);
    DeviceSpec odd_size = basic_spec();
    odd_size.bars[0]->size = 3000;
    EXPECT_FALSE(bad(odd_size).empty());
    DeviceSpec bad_vendor = basic_spec();
    bad_vendor.header.vendor_id = 0xFFFF;
    EXPECT_FALSE(bad(bad_vendor).empty());
    EXPECT_FALSE(ModelServer::create(nullptr, &events));
}

void set_bus_master(ModelServer& server, bool on) {
    const uint8_t b[2] = {static_cast<uint8_t>(on ? pci::command::kBusMaster : 0), 0};
    ASSERT_TRUE(server.config_write(pci::reg::kCommand, std::span<const uint8_t>(b, 2)));
}

TEST(ModelServer, DmaIsRefusedWhileBusMasteringIsOff) {
    RecordingEvents events;
    events.ram[0x10] = 0x5A;
    auto server = ModelServer::create(std::make_unique<Multibar>(), &events);
    ASSERT_TRUE(server);
    uint8_t b[1] = {};
    auto r = (*server)->dma_read(0x10, std::span(b, 1));  // power-on: command register 0
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().sys_errno, EPERM);
    EXPECT_NE(r.error().message.find("bus mastering is off"), std::string::npos)
        << r.error().message;
    const uint8_t w[1] = {1};
    EXPECT_FALSE((*server)->dma_write(0x20, std::span<const uint8_t>(w, 1)));
    EXPECT_EQ(events.ram[0x20], 0);
    EXPECT_EQ((*server)->refused_dma(), 2u);
    set_bus_master(**server, true);
    ASSERT_TRUE((*server)->dma_read(0x10, std::span(b, 1)));
    EXPECT_EQ(b[0], 0x5A);
    ASSERT_TRUE((*server)->dma_write(0x20, std::span<const uint8_t>(w, 1)));
    EXPECT_EQ(events.ram[0x20], 1);
    (*server)->reset();  // back to power-on: off again
    EXPECT_FALSE((*server)->dma_read(0x10, std::span(b, 1)));
}

TEST(ModelServer, DeferredWorkRunsInOrderAfterwardsNeverNested) {
    RecordingEvents events;
    auto server = ModelServer::create(std::make_unique<Multibar>(), &events);
    ASSERT_TRUE(server);
    ModelServer& s = **server;
    std::vector<int> order;
    s.defer([&] {
        order.push_back(1);
        s.defer([&] { order.push_back(3); });  // queued while running: runs after 2
        s.run_deferred();                      // nested call: returns at once
        order.push_back(11);
    });
    s.defer([&] { order.push_back(2); });
    EXPECT_TRUE(order.empty());  // nothing runs until the transport says so
    s.run_deferred();
    EXPECT_EQ(order, (std::vector<int>{1, 11, 2, 3}));
    EXPECT_FALSE(s.has_deferred());
    s.defer([&] { order.push_back(4); });
    s.reset();  // dropped with the state it belonged to
    s.run_deferred();
    EXPECT_EQ(order.size(), 4u);
}

TEST(ModelServer, DmaWithoutEventsFailsAndInterruptsAreDropped) {
    auto server = ModelServer::create(std::make_unique<Multibar>(), nullptr);
    ASSERT_TRUE(server);
    set_bus_master(**server, true);
    uint8_t b[4];
    EXPECT_FALSE((*server)->dma_read(0, std::span(b, 4)));
    ASSERT_TRUE((*server)->set_irqs(IrqKind::msi, 1));
    (*server)->signal_msi(0);
    EXPECT_EQ((*server)->dropped_msi(), 1u);
}

TEST(ModelRegistry, ListAddAndDuplicates) {
    ModelRegistry reg;
    ASSERT_TRUE(models::register_builtin_models(reg));
    auto list = reg.list();
    ASSERT_EQ(list.size(), 2u);
    EXPECT_EQ(list[0].first, "edu");
    EXPECT_EQ(list[1].first, "multibar");
    EXPECT_FALSE(list[0].second.empty());
    EXPECT_FALSE(models::register_builtin_models(reg));
    EXPECT_FALSE(reg.add("a:b", "bad name", &models::Multibar::create));
    EXPECT_FALSE(reg.add("x", "no factory", ModelFactory{}));
    auto m = reg.create("multibar", {});
    ASSERT_TRUE(m) << m.error().message;
    EXPECT_EQ((*m)->spec().name, "multibar");
    auto none = ModelRegistry{}.create("edu", {});
    ASSERT_FALSE(none);
    EXPECT_EQ(none.error().message, "unknown device model 'edu' (known: none)");
}

TEST(ModelParams, NumbersAndBooleans) {
    ModelParams p{{"a", "0x10"}, {"b", "17"}, {"c", "0b101"}, {"d", "-1"}, {"e", "on"}};
    EXPECT_EQ(param_u64(p, "a", 0).value(), 16u);
    EXPECT_EQ(param_u64(p, "b", 0).value(), 17u);
    EXPECT_EQ(param_u64(p, "c", 0).value(), 5u);
    EXPECT_FALSE(param_u64(p, "d", 0));
    EXPECT_EQ(param_u64(p, "zz", 7).value(), 7u);
    EXPECT_TRUE(param_bool(p, "e", false).value());
    EXPECT_FALSE(param_bool(p, "a", false));
    EXPECT_FALSE(param_u64(ModelParams{{"x", "0x"}}, "x", 0));
    EXPECT_FALSE(param_u64(ModelParams{{"x", "99999999999999999999"}}, "x", 0));
}

}  // namespace
}  // namespace potemkin::sdk

namespace potemkin::sdk {
namespace {

// The device's whole config region as a ConfigSpace (for the capability walks).
pci::ConfigSpace dev_config(hostdev::HostDevice& d) {
    auto info = d.region_info(hostdev::kConfigRegion);
    const bool express = info && info->size == 4096;
    std::vector<uint8_t> bytes(express ? 4096 : 256);
    EXPECT_TRUE(d.config_read(0, bytes));
    pci::ConfigSpace cs(express ? pci::SpaceSize::express : pci::SpaceSize::conventional);
    EXPECT_TRUE(cs.set_bytes(0, bytes));
    return cs;
}

// multibar?pcie=1 through the model server: a 4 KiB CONFIG region, the PCI Express capability
// after MSI and MSI-X (their offsets unchanged) and the extended chain, masks applied to writes.
TEST_F(MultibarTest, PcieFormHasFourKilobytesAndTheChain) {
    auto plain_msix = pci::find_capability(dev_config(*dev), pci::cap_id::kMsix);
    auto d = transports.open("inproc:multibar?pcie=1", {&events});
    ASSERT_TRUE(d) << d.error().message;
    auto info = (*d)->region_info(hostdev::kConfigRegion);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->size, 4096u);
    const pci::ConfigSpace cs = dev_config(**d);
    EXPECT_EQ(pci::find_capability(cs, pci::cap_id::kMsix), plain_msix);
    EXPECT_TRUE(pci::find_capability(cs, pci::cap_id::kPciExpress));
    auto chain = pci::walk_extended_capabilities(cs);
    ASSERT_TRUE(chain) << chain.error().message;
    EXPECT_EQ(*chain,
              (std::vector<pci::ExtCapabilityRef>{{0x100, pci::ext_cap_id::kAer, 2},
                                                  {0x148, pci::ext_cap_id::kDeviceSerialNumber, 1},
                                                  {0x154, pci::ext_cap_id::kVendorSpecific, 1}}));
    // The VSEC's RW1C register, written through the config region.
    std::array<uint8_t, 4> one{0x0F, 0, 0, 0}, got{};
    ASSERT_TRUE((*d)->config_write(0x154 + 0x10, one));
    ASSERT_TRUE((*d)->config_read(0x154 + 0x10, got));
    EXPECT_EQ(got, (std::array<uint8_t, 4>{0xA0, 0xA5, 0xA5, 0xA5}));
    // A reset restores it.
    ASSERT_TRUE((*d)->reset());
    ASSERT_TRUE((*d)->config_read(0x154 + 0x10, got));
    EXPECT_EQ(got, (std::array<uint8_t, 4>{0xA5, 0xA5, 0xA5, 0xA5}));
    (*d)->close();
}

}  // namespace
}  // namespace potemkin::sdk

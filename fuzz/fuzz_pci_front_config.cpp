// A hostile guest's configuration-space and MMIO accesses against the PCI front-end: edu and
// multibar in-process behind PCI_FRONT on a PciBus, driven through the bus as mechanism #1
// would (so every write's bus changes — BAR moves, decode on and off, ROM enable — are applied
// all-or-nothing) and through the MMIO bus where the BARs decode. Records of 8 bytes:
//   u8 function (even: edu, odd: multibar), u8 offset, u8 op (bit 0 write, bits 1-2 size
//   1/2/4/4, bit 3 MMIO instead of config), u8 unused, u32 value (MMIO: BAR index in the low 3
//   bits of the offset byte, offset in the BAR from the value).
// Nothing may crash, and the front-end's invariants hold (pci::ConfigSpace masks).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "common/log.hpp"
#include "devices/pci_front.hpp"
#include "machine/builtins.hpp"
#include "pci/pci_bus.hpp"
#include "vm/config.hpp"
#include "vm/device.hpp"
#include "vm/guest_memory.hpp"

using namespace potemkin;

namespace {

struct QuietSink final : vm::InterruptSink {
    void set_irq(unsigned, bool) override {}
    void send_msi(uint64_t, uint32_t) override {}
    uint64_t add_eoi_listener(EoiListener) override { return ++next; }
    void remove_eoi_listener(uint64_t) override {}
    uint64_t next = 0;
};

struct NoTimers final : vm::TimerService {
    vm::Clock::time_point now() const override { return {}; }
    vm::TimerId schedule(vm::Clock::time_point, std::function<void()>) override { return 0; }
    void cancel(vm::TimerId) override {}
};

constexpr const char* kConfig = R"(<vm><memory>16</memory><guest file="none.elf"/><devices>
  <device class="PCI" id="pci0"/>
  <device class="PCI_FRONT" id="edu0" bus="pci0" hostdev="inproc:edu" slot="3"/>
  <device class="PCI_FRONT" id="mb0" bus="pci0" hostdev="inproc:multibar" slot="4"/>
</devices></vm>)";

}  // namespace

namespace {

// Built once (opening the devices costs far more than an input); every input starts from a VM
// reset, as a guest would after one.
struct Vm {
    std::unique_ptr<vm::GuestMemory> memory;
    vm::PortBus ports{vm::Space::io, 0x10000};
    vm::MmioBus mmio{vm::Space::mmio, 0};
    QuietSink sink;
    NoTimers timers;
    std::unique_ptr<vm::DeviceManager> manager;
    std::unique_ptr<vm::DeviceContext> ctx;
    pci::PciBus* bus = nullptr;
    devices::PciFront* fronts[2] = {nullptr, nullptr};

    Vm() {
        log::set_level(log::Level::error);
        if (!machine::register_builtins()) std::abort();
        auto m = vm::GuestMemory::create({{Gpa(0), 16u << 20}});
        if (!m) std::abort();
        memory = std::move(*m);
        manager = std::make_unique<vm::DeviceManager>(vm::DeviceClassRegistry::builtin());
        ctx = std::make_unique<vm::DeviceContext>(
            vm::DeviceContext{ports, mmio, *memory, sink, timers, *manager, nullptr});
        auto doc = vm::ConfigDocument::load_string(kConfig, "fuzz.xml");
        if (!doc) std::abort();
        auto cfg = vm::parse_vm_config(*doc);
        if (!cfg || !manager->create_all(cfg->devices, *ctx)) std::abort();
        bus = manager->find_as<pci::PciBus>("pci0");
        fronts[0] = manager->find_as<devices::PciFront>("edu0");
        fronts[1] = manager->find_as<devices::PciFront>("mb0");
        if (bus == nullptr || fronts[0] == nullptr || fronts[1] == nullptr) std::abort();
    }
    ~Vm() { manager.reset(); }  // devices first: they use ctx and unhook from the buses
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static Vm vm;
    vm.manager->reset_all();
    auto* bus = vm.bus;
    auto& fronts = vm.fronts;
    auto& mmio = vm.mmio;
    static const unsigned kSizes[4] = {1, 2, 4, 4};
    for (size_t at = 0; at + 8 <= size; at += 8) {
        const uint8_t* r = data + at;
        devices::PciFront& f = *fronts[r[0] & 1];
        const bool write = (r[2] & 1) != 0;
        const unsigned width = kSizes[(r[2] >> 1) & 3];
        uint32_t value;
        std::memcpy(&value, r + 4, 4);
        if ((r[2] & 8) == 0) {
            const uint32_t offset = r[1] & ~(width - 1);
            if (write)
                bus->config_write(*f.address(), offset, width, value);
            else
                (void)bus->config_read(*f.address(), offset, width);
            continue;
        }
        // MMIO where a BAR of this function decodes now (or wherever its register points).
        const unsigned bar = r[1] % 6;
        const uint32_t reg = bus->config_read(*f.address(), 0x10 + 4 * bar, 4);
        if ((reg & 1) != 0) continue;  // an I/O BAR
        const uint64_t addr = (reg & ~0xfu) + (value & 0xffff);
        if (write)
            mmio.write(Gpa(addr & ~uint64_t{width - 1}), width, value);
        else
            (void)mmio.read(Gpa(addr & ~uint64_t{width - 1}), width);
    }
    return 0;
}

// counter-device: a complete out-of-process PCI device in one file. It serves a "counter"
// model to any vfio-user VMM (potemkin with hostdev="vfio-user:/path", QEMU's vfio-user-pci,
// cloud-hypervisor) on a UNIX socket, using only potemkin's SDK headers.
//
// The device (vendor 0x1234, device 0xc0c0, class 0xff0000 "unassigned"):
//   BAR0, 4 KiB memory, 4-byte registers (other sizes read all-ones, writes ignored):
//     0x00 RO  identification 0xc0c00001
//     0x04 RW  counter
//     0x08 WO  add: counter += value; when the counter reaches `threshold`, an interrupt
//     0x0c RW  threshold (0 = never)
//     0x10 RW  interrupt status: bit 0 "threshold reached"; writing 1 clears it
//     0x14 WO  DMA: write the counter (4 bytes, little-endian) to the guest address given,
//              once the write is answered (DeviceServices::defer); needs bus mastering
//   Interrupts: MSI (1 vector) when the VMM enabled it, INTx (INTA#) otherwise, level-
//   triggered while interrupt status bit 0 is set.
//
// Usage: counter-device --socket PATH | --fd N     (SIGTERM/SIGINT: clean exit)

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "sdk/device_model.hpp"
#include "sdk/serve_loop.hpp"
#include "vfio_user/server.hpp"

namespace {

using namespace potemkin;

class Counter final : public sdk::DeviceModel {
  public:
    Counter() {
        spec_.name = "counter";
        spec_.header.vendor_id = 0x1234;
        spec_.header.device_id = 0xc0c0;
        spec_.header.class_code = 0xff0000;
        spec_.header.interrupt_pin = pci::InterruptPin::inta;
        spec_.bars[0] = sdk::BarSpec{pci::BarKind::mem32, 4096, false};
        spec_.msi = pci::MsiSettings{.vectors = 1, .address64 = true, .per_vector_masking = false};
    }
    const sdk::DeviceSpec& spec() const override { return spec_; }

    uint64_t bar_read(int, uint64_t offset, unsigned size) override {
        if (size != 4) return ~uint64_t{0};
        switch (offset) {
            case 0x00:
                return 0xc0c00001;
            case 0x04:
                return counter_;
            case 0x0c:
                return threshold_;
            case 0x10:
                return status_;
            default:
                return ~uint64_t{0};
        }
    }
    void bar_write(int, uint64_t offset, unsigned size, uint64_t value) override {
        if (size != 4) return;
        const auto v = static_cast<uint32_t>(value);
        switch (offset) {
            case 0x04:
                counter_ = v;
                break;
            case 0x08:
                counter_ += v;
                if (threshold_ != 0 && counter_ >= threshold_) raise();
                break;
            case 0x0c:
                threshold_ = v;
                break;
            case 0x10:
                status_ &= ~v;
                if (status_ == 0 && services_ != nullptr) services_->set_intx(false);
                break;
            case 0x14: {
                // DMA after the write is answered: a VMM (QEMU) may serve it only then. The
                // value is the counter as it was written (needs bus mastering enabled).
                const uint32_t value = counter_;
                services_->defer([this, v, value] {
                    uint8_t bytes[4];
                    std::memcpy(bytes, &value, 4);
                    if (auto r = services_->dma_write(v, bytes); !r)
                        std::fprintf(stderr, "counter: DMA to %#x failed: %s\n", v,
                                     r.error().message.c_str());
                });
                break;
            }
            default:
                break;
        }
    }
    void reset() override { counter_ = threshold_ = status_ = 0; }

  private:
    void raise() {
        status_ |= 1;
        if (services_ == nullptr) return;
        if (services_->irq_mode() == sdk::IrqMode::intx)
            services_->set_intx(true);
        else
            services_->signal_msi(0);
    }

    sdk::DeviceSpec spec_;
    uint32_t counter_ = 0;
    uint32_t threshold_ = 0;
    uint32_t status_ = 0;
};

int usage() {
    std::fprintf(stderr, "usage: counter-device --socket PATH | --fd N\n");
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    vfio_user::VfioUserServerSettings settings;
    settings.label = "counter";
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--socket" && i + 1 < argc)
            settings.socket_path = argv[++i];
        else if (a == "--fd" && i + 1 < argc)
            settings.listen_fd = std::atoi(argv[++i]);
        else
            return usage();
    }
    if (settings.socket_path.empty() == (settings.listen_fd < 0)) return usage();

    // SIGTERM/SIGINT end run() through a signalfd: the socket file is removed on the way out.
    auto stop = sdk::stop_signal_fd();
    if (!stop) {
        std::fprintf(stderr, "counter-device: %s\n", stop.error().message.c_str());
        return 1;
    }
    settings.stop_fd = stop->get();

    auto server = vfio_user::VfioUserServer::create(std::make_unique<Counter>(), settings);
    if (!server) {
        std::fprintf(stderr, "counter-device: %s\n", server.error().message.c_str());
        return 1;
    }
    std::fprintf(stderr, "counter-device: serving on %s\n",
                 settings.socket_path.empty() ? "the inherited fd" : settings.socket_path.c_str());
    auto r = (*server)->run();
    if (!r) {
        std::fprintf(stderr, "counter-device: %s\n", r.error().message.c_str());
        return 1;
    }
    return 0;
}

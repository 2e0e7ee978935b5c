// The ModelServer's event sink inside a device server process (vfio-user, mpqemu): a model's
// interrupts and DMA go back to the server, which turns them into its protocol's eventfds and
// memory accesses. `Server` provides signal_intx(bool), signal_msi(unsigned) and
// dma(address, buffer, write).
#pragma once

#include <span>

#include "hostdev/host_device.hpp"

namespace potemkin::sdk {

template <typename Server>
class ServerEvents final : public hostdev::HostDeviceEvents {
  public:
    explicit ServerEvents(Server& s) : s_(s) {}
    void intx(bool asserted) override { s_.signal_intx(asserted); }
    void msi(unsigned vector) override { s_.signal_msi(vector); }
    Result<void> dma_read(uint64_t address, std::span<uint8_t> out) override {
        return s_.dma(address, out, false);
    }
    Result<void> dma_write(uint64_t address, std::span<const uint8_t> in) override {
        // dma() only reads the buffer when writing.
        return s_.dma(address, std::span<uint8_t>(const_cast<uint8_t*>(in.data()), in.size()),
                      true);
    }
    // The model is in this process: it never goes away.
    void disconnected(std::string_view) override {}

  private:
    Server& s_;
};

}  // namespace potemkin::sdk

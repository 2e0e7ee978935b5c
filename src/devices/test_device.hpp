// TEST_DEVICE: the VMM-side device guest tests talk to (docs/test-device.md). It answers port
// and MMIO accesses of every size from scratch memory and raises legacy IRQs and MSIs on
// request, so guests can check the buses and interrupt delivery end to end.
#pragma once

#include <array>

#include "vm/device.hpp"

namespace potemkin::devices {

class TestDevice final : public vm::Device {
  public:
    struct Settings {
        uint16_t port = 0x700;
        uint64_t mmio = 0xd000'0000;
    };
    static Result<std::unique_ptr<TestDevice>> create(std::string id, const Settings& s,
                                                      vm::DeviceContext& ctx);
    ~TestDevice() override;
    void reset() override;

    uint64_t accesses() const { return accesses_; }

    static constexpr uint32_t kMagic = 0x54534554;  // "TEST"

  private:
    TestDevice(std::string id, vm::DeviceContext& ctx) : Device(std::move(id)), ctx_(ctx) {}
    uint64_t mmio_read(uint64_t off, unsigned size);
    void mmio_write(uint64_t off, unsigned size, uint64_t value);
    uint64_t port_read(uint64_t off, unsigned size);
    void port_write(uint64_t off, unsigned size, uint64_t value);
    uint64_t scratch_read(const uint8_t* p, unsigned size) const;
    void scratch_write(uint8_t* p, unsigned size, uint64_t value);
    void dma_to_guest();

    vm::DeviceContext& ctx_;
    std::array<uint8_t, 0x800> mmio_scratch_{};
    std::array<uint8_t, 8> port_scratch_{};
    uint64_t msi_address_ = 0;
    uint64_t accesses_ = 0;
    uint32_t dma_address_ = 0, dma_length_ = 0, dma_status_ = 0;
    vm::RangeId mmio_range_ = 0, port_range_ = 0;
};

Result<void> register_test_device(vm::DeviceClassRegistry& registry);

}  // namespace potemkin::devices

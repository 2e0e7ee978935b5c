// The in-process transport, "inproc:NAME[?k=v...]": a DeviceModel compiled into the VMM,
// called directly through a ModelServer. The cheapest transport, and the reference the
// out-of-process ones are compared against: the same model behaves the same on all of them.
#pragma once

#include <memory>
#include <string>

#include "hostdev/host_device.hpp"
#include "sdk/device_model.hpp"
#include "sdk/model_server.hpp"

namespace potemkin::inproc {

class InprocHostDevice final : public hostdev::HostDevice {
  public:
    // Wrap `model` in a ModelServer whose events go to `events` (required, must outlive the
    // device). `label` names the device in errors ("inproc:edu").
    static Result<std::unique_ptr<InprocHostDevice>> open(
        std::unique_ptr<sdk::DeviceModel> model, hostdev::HostDeviceEvents* events,
        std::string label, const sdk::ModelServerSettings& settings = {});
    ~InprocHostDevice() override;

    Result<hostdev::DeviceInfo> info() override;
    Result<hostdev::RegionInfo> region_info(uint32_t index) override;
    Result<void> config_read(uint32_t offset, std::span<uint8_t> out) override;
    Result<void> config_write(uint32_t offset, std::span<const uint8_t> in) override;
    Result<void> region_read(uint32_t index, uint64_t offset, std::span<uint8_t> out) override;
    Result<void> region_write(uint32_t index, uint64_t offset,
                              std::span<const uint8_t> in) override;
    Result<void> set_irqs(hostdev::IrqKind kind, uint32_t count) override;
    Result<void> ack_intx() override;
    Result<void> reset() override;
    // Destroys the server and the model; idempotent. Every later call fails.
    void close() override;

    // The server behind the device, for tests and tools; null after close().
    sdk::ModelServer* server() { return server_.get(); }

  private:
    InprocHostDevice(std::unique_ptr<sdk::ModelServer> server, std::string label);
    Result<sdk::ModelServer*> live();
    // Runs the model's deferred work after an access (DeviceServices::defer); passes
    // `outcome` on.
    Result<void> settled(Result<void> outcome);

    std::unique_ptr<sdk::ModelServer> server_;
    std::string label_;
};

// Register scheme "inproc" in `transports`: the URL path names a model in `models`, the URL
// parameters become its ModelParams. `models` must outlive `transports`. Fails if "inproc" is
// already registered. The VM assembler calls this once at startup, typically as
// register_inproc_transport(hostdev::TransportRegistry::builtin()).
Result<void> register_inproc_transport(
    hostdev::TransportRegistry& transports,
    const sdk::ModelRegistry& models = sdk::ModelRegistry::builtin());

}  // namespace potemkin::inproc

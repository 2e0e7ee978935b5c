// The fixed platform ports of docs/guest-abi.md: the 0xE9 debug console and the 0xF4 exit port.
#pragma once

#include <functional>
#include <string_view>

#include "vm/device.hpp"

namespace potemkin::devices {

inline constexpr uint16_t kDebugConsolePort = 0xe9;
inline constexpr uint16_t kExitPort = 0xf4;

// Bytes written to port 0xE9 go to `sink` (Bochs' "port e9 hack"); reads return 0xE9 so a
// guest can detect the console.
class DebugConsole final : public vm::Device {
  public:
    using Sink = std::function<void(std::string_view)>;
    static Result<std::unique_ptr<DebugConsole>> create(vm::PortBus& ports, Sink sink);
    ~DebugConsole() override;

  private:
    DebugConsole(vm::PortBus& ports, Sink sink)
        : Device("console"), ports_(ports), sink_(std::move(sink)) {}
    vm::PortBus& ports_;
    Sink sink_;
    vm::RangeId range_ = 0;
};

// A write of N (any size) to port 0xF4 asks the VM to end with status N.
class ExitPort final : public vm::Device {
  public:
    using OnExit = std::function<void(uint32_t status)>;
    static Result<std::unique_ptr<ExitPort>> create(vm::PortBus& ports, OnExit on_exit);
    ~ExitPort() override;

  private:
    ExitPort(vm::PortBus& ports, OnExit on_exit)
        : Device("exit"), ports_(ports), on_exit_(std::move(on_exit)) {}
    vm::PortBus& ports_;
    OnExit on_exit_;
    vm::RangeId range_ = 0;
};

}  // namespace potemkin::devices

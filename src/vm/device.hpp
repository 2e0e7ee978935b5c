// Devices, the classes that create them from configuration, and the manager that owns them.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "vm/bus.hpp"
#include "vm/config.hpp"
#include "vm/guest_memory.hpp"
#include "vm/interrupts.hpp"
#include "vm/timer.hpp"

namespace potemkin::vm {

class DeviceManager;

// An interrupt a device raised, as the trace records it (docs/trace.md).
struct TracedInterrupt {
    enum class Kind : uint8_t { intx, msi, msix };
    Kind kind = Kind::intx;
    bool level = false;   // intx: asserted (true) or deasserted
    unsigned vector = 0;  // msi, msix: the vector the device signalled
};

// What devices tell the trace besides the accesses the buses see (docs/trace.md): notes,
// interrupts, DMA and link events. The DeviceContext holds null when tracing is off, so each
// hook costs one test of a pointer.
class TraceNotes {
  public:
    virtual ~TraceNotes() = default;
    // Free-form text (GENERIC's PRINT modes).
    virtual void note(std::string_view device, std::string_view text) = 0;
    // The device raised `what`. What the front-end delivers for it through the
    // DeviceContext's interrupts until interrupt_end() (the PIC line, the MSI message) is
    // recorded with it; nothing delivered (masked, disabled) is recorded as such.
    virtual void interrupt_begin(std::string_view device, TracedInterrupt what) {
        (void)device;
        (void)what;
    }
    virtual void interrupt_end() {}
    // A DMA transfer the device asked for: `to_guest` for a write into guest memory. `refused`
    // is empty when it happened, else why not.
    virtual void dma(std::string_view device, bool to_guest, uint64_t guest_address,
                     uint64_t length, std::string_view refused) {
        (void)device, (void)to_guest, (void)guest_address, (void)length, (void)refused;
    }
    // The transport lost the device (`up` false, `why`) or reached it again (`up` true).
    virtual void link(std::string_view device, bool up, std::string_view why) {
        (void)device, (void)up, (void)why;
    }
};

// What a device may reach. Devices never see the CPU engine.
struct DeviceContext {
    PortBus& ports;
    MmioBus& mmio;
    GuestMemory& memory;
    InterruptSink& interrupts;
    TimerService& timers;
    DeviceManager& devices;
    TraceNotes* trace = nullptr;  // null when tracing is off
    // Thread-safe: run a function on the engine thread (devices with their own threads).
    // Filled by the machine; null in unit tests.
    std::function<void(std::function<void()>)> post;
    // Thread-safe: +1/-1 while a device thread may raise interrupts, so a halted guest waits
    // for it instead of ending the run. Filled by the machine; null in unit tests.
    std::function<void(int)> external_source;
    // Map host memory (a device's shared BAR memory) straight into guest-physical space on
    // every vCPU, so guest accesses there no longer reach the buses; page-aligned. Called on
    // the engine thread (inside a config write). unmap_direct takes back exactly a range
    // map_direct mapped; the buses answer there again. Filled by the machine; null in unit
    // tests (then nothing is mapped directly and every access traps).
    std::function<Result<void>(Gpa, uint64_t, uint8_t*)> map_direct;
    std::function<Result<void>(Gpa, uint64_t)> unmap_direct;
    // A guest-visible reset trigger fired (the reset control register at 0xCF9): reset the VM
    // once the current instruction completes (docs/guest-abi.md, "VM reset"). `why` is for the
    // log. Engine thread. Filled by the machine; null in unit tests (then nothing resets).
    std::function<void(std::string why)> request_reset;
    // The VM's console: what `potemkin run` prints (the 0xE9 debug console writes there too).
    // Devices that carry guest output (SERIAL) send it here. Null in unit tests.
    std::function<void(std::string_view)> console;
};

class Device {
  public:
    explicit Device(std::string id) : id_(std::move(id)) {}
    virtual ~Device() = default;
    Device(const Device&) = delete;
    Device& operator=(const Device&) = delete;

    const std::string& id() const { return id_; }
    // A VM reset: back to the power-on state. DeviceManager::reset_all() calls it on every
    // device in creation order (buses before the devices on them), on the engine thread, with
    // no vCPU running.
    virtual void reset() {}

  private:
    std::string id_;
};

using DeviceFactory =
    std::function<Result<std::unique_ptr<Device>>(const ConfigElement&, DeviceContext&)>;

// Device classes by name ("PCI", "PCI_FRONT", "GENERIC", ...).
class DeviceClassRegistry {
  public:
    // The process-wide registry of the device classes that ship with potemkin; filled once by
    // machine::register_builtins().
    static DeviceClassRegistry& builtin();
    // Registering a name twice is a programming error and fails.
    Result<void> add(std::string name, DeviceFactory factory);
    const DeviceFactory* find(std::string_view name) const;
    std::vector<std::string> names() const;

  private:
    std::map<std::string, DeviceFactory, std::less<>> factories_;
};

class DeviceManager {
  public:
    explicit DeviceManager(const DeviceClassRegistry& classes) : classes_(classes) {}
    ~DeviceManager();  // destroys devices in reverse creation order

    // Create every configured device in order; the first error stops and names its element.
    Result<void> create_all(const std::vector<ConfigElement>& elements, DeviceContext& ctx);
    // Adopt a device created in code (platform devices); ids must be unique.
    Result<Device*> adopt(std::unique_ptr<Device> device);

    Device* find(std::string_view id) const;
    template <typename T>
    T* find_as(std::string_view id) const {
        return dynamic_cast<T*>(find(id));
    }
    // For a configuration attribute that names another device of type T.
    template <typename T>
    Result<T*> reference(const ConfigElement& e, std::string_view attr,
                         std::string_view what) const {
        auto id = e.required(attr);
        if (!id) return fail(id.error());
        Device* d = find(*id);
        if (!d) return fail(e.attr_error(attr, fmt::format("refers to unknown device '{}'", *id)));
        auto* t = dynamic_cast<T*>(d);
        if (!t)
            return fail(
                e.attr_error(attr, fmt::format("refers to '{}', which is not {}", *id, what)));
        return t;
    }

    void reset_all();
    const std::vector<std::unique_ptr<Device>>& devices() const { return devices_; }

  private:
    const DeviceClassRegistry& classes_;
    std::vector<std::unique_ptr<Device>> devices_;
};

}  // namespace potemkin::vm

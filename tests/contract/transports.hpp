// The transports the contract suite runs on, each serving testing::ContractModel and opened by
// URL through a TransportRegistry as a VM would open it:
// - Inproc:   inproc:contract (a test ModelRegistry; the model in this process).
// - VfioUser: a vfio_user::VfioUserServer on its own thread, listening in a temporary
//             directory; the client opens vfio-user:PATH.
// - Mpqemu:   an mpqemu::MpqemuServer on its own thread on one end of a socketpair; the client
//             opens mpqemu-fd:N on the other.
// What each transport cannot do by design is stated in its Traits, with the reason the tests
// give when they skip.
#pragma once

#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <ostream>
#include <string>
#include <thread>

#include "contract_model.hpp"
#include "hostdev/host_device.hpp"
#include "inproc/transport.hpp"
#include "mpqemu/client.hpp"
#include "mpqemu/server.hpp"
#include "vfio_user/client.hpp"
#include "vfio_user/server.hpp"

namespace potemkin::testing {

// vfio_user: potemkin's client and server as they come (the fast path agreed, docs/fast-path.md);
// vfio_user_messages: the same with fastpath=0, every access a message.
enum class TransportKind { inproc, vfio_user, vfio_user_messages, mpqemu };

inline const char* transport_name(TransportKind k) {
    switch (k) {
        case TransportKind::inproc:
            return "Inproc";
        case TransportKind::vfio_user:
            return "VfioUser";
        case TransportKind::vfio_user_messages:
            return "VfioUserMessages";
        case TransportKind::mpqemu:
            return "Mpqemu";
    }
    return "Unknown";
}

// One run of the suite: a transport, and whether the VMM side gives it OpenContext::post
// (as a VM does) or not (tools, tests: events then arrive at the next HostDevice call).
struct ContractParam {
    TransportKind kind = TransportKind::inproc;
    bool post = true;
};

inline std::string param_name(const ContractParam& p) {
    return std::string(transport_name(p.kind)) + (p.post ? "" : "WithoutPost");
}

// gtest prints parameters with this (ctest names, failure messages).
inline void PrintTo(const ContractParam& p, std::ostream* os) {
    *os << param_name(p);
}

// What a transport can do, and why not when it cannot.
struct TransportTraits {
    uint32_t config_size = 4096;               // bytes of config space reachable through it
    const char* no_extended_config = nullptr;  // null: config_size covers the model's 4096 bytes
    const char* no_msi = nullptr;              // null: MSI and MSI-X are delivered
    const char* no_disconnect = nullptr;       // null: the device side can go away
    const char* no_reconnect = nullptr;        // null: a device side that comes back is reconnected
    bool shares_guest_ram = false;             // DMA goes through OpenContext::memory's memfd
};

class TransportHarness {
  public:
    virtual ~TransportHarness() = default;
    virtual TransportTraits traits() const = 0;
    // Starts the device side (if any) and opens the client by URL.
    virtual Result<std::unique_ptr<hostdev::HostDevice>> open(const hostdev::OpenContext& ctx) = 0;
    // The device side goes away (its server stops and is destroyed). Out-of-process only.
    virtual void kill() {}
    // After kill(): a new device side (a fresh model) where the old one was.
    virtual Result<void> restart() { return failf("this transport cannot restart"); }
    // The server loop's result once it ended (ok while running or for inproc).
    virtual Result<void> server_result() const { return ok(); }

  protected:
    static std::unique_ptr<sdk::DeviceModel> model() { return std::make_unique<ContractModel>(); }
};

class InprocHarness final : public TransportHarness {
  public:
    InprocHarness() {
        ready_ =
            models_.add("contract", "the transport contract suite's model", ContractModel::create);
        if (ready_) ready_ = inproc::register_inproc_transport(transports_, models_);
    }
    TransportTraits traits() const override {
        return {.config_size = 4096,
                .no_extended_config = nullptr,
                .no_msi = nullptr,
                .no_disconnect =
                    "inproc: the model lives in the VMM process; there is no "
                    "connection or device process to lose",
                .no_reconnect = "inproc: nothing to reconnect",
                .shares_guest_ram = false};
    }
    Result<std::unique_ptr<hostdev::HostDevice>> open(const hostdev::OpenContext& ctx) override {
        if (!ready_) return fail(ready_.error());
        return transports_.open("inproc:contract", ctx);
    }

  private:
    sdk::ModelRegistry models_;  // before transports_: the opener refers to it
    hostdev::TransportRegistry transports_;
    Result<void> ready_;
};

// A server with run() on its own thread; stop() and destruction on the test thread.
template <typename Server>
class ServerThread {
  public:
    void start(std::unique_ptr<Server> server) {
        server_ = std::move(server);
        thread_ = std::thread([this] { result_ = server_->run(); });
    }
    void stop() {
        if (!server_) return;
        server_->stop();
        if (thread_.joinable()) thread_.join();
        server_.reset();
    }
    ~ServerThread() { stop(); }
    const Result<void>& result() const { return result_; }

  private:
    std::unique_ptr<Server> server_;
    std::thread thread_;
    Result<void> result_;
};

class VfioUserHarness final : public TransportHarness {
  public:
    explicit VfioUserHarness(bool fast_path = true)
        : fast_path_(fast_path), ready_(vfio_user::register_vfio_user_transport(transports_)) {}
    ~VfioUserHarness() override {
        server_.stop();
        if (!dir_.empty()) {
            std::error_code ec;
            std::filesystem::remove_all(dir_, ec);
        }
    }
    TransportTraits traits() const override {
        return {.config_size = 4096,
                .no_extended_config = nullptr,
                .no_msi = nullptr,
                .no_disconnect = nullptr,
                .no_reconnect = nullptr,
                .shares_guest_ram = true};
    }
    Result<std::unique_ptr<hostdev::HostDevice>> open(const hostdev::OpenContext& ctx) override {
        if (!ready_) return fail(ready_.error());
        char tmpl[] = "/tmp/potemkin-contract-XXXXXX";
        if (::mkdtemp(tmpl) == nullptr) return failf(Errno{errno}, "mkdtemp");
        dir_ = tmpl;
        POTEMKIN_TRY(start_server());
        return transports_.open("vfio-user:" + socket_path() + (fast_path_ ? "" : "?fastpath=0"),
                                ctx);
    }
    void kill() override { server_.stop(); }
    Result<void> restart() override { return start_server(); }
    Result<void> server_result() const override { return server_.result(); }

  private:
    std::string socket_path() const { return dir_ + "/contract.sock"; }
    Result<void> start_server() {
        vfio_user::VfioUserServerSettings s;
        s.socket_path = socket_path();
        s.io_timeout_ms = 2000;
        s.label = "contract";
        auto server = vfio_user::VfioUserServer::create(model(), s);
        if (!server) return fail(server.error());
        server_.start(std::move(server).value());
        return ok();
    }

    bool fast_path_ = true;  // false: fastpath=0 in the URL
    hostdev::TransportRegistry transports_;
    Result<void> ready_;
    std::string dir_;
    ServerThread<vfio_user::VfioUserServer> server_;
};

class MpqemuHarness final : public TransportHarness {
  public:
    MpqemuHarness() : ready_(mpqemu::register_mpqemu_transports(transports_)) {}
    ~MpqemuHarness() override { server_.stop(); }
    TransportTraits traits() const override {
        return {.config_size = 256,
                .no_extended_config =
                    "mpqemu: PCI_CFGREAD/PCI_CFGWRITE reach only the first 256 "
                    "bytes of config space (QEMU's x-remote exits beyond them)",
                .no_msi =
                    "mpqemu: QEMU's x-remote machine and x-pci-proxy-dev have no MSI or "
                    "MSI-X path, only INTx through an irqfd",
                .no_disconnect = nullptr,
                .no_reconnect =
                    "mpqemu-fd: an inherited socket cannot be re-established (only "
                    "qemu:...?respawn=1 starts a new remote, which needs QEMU)",
                .shares_guest_ram = true};
    }
    Result<std::unique_ptr<hostdev::HostDevice>> open(const hostdev::OpenContext& ctx) override {
        if (!ready_) return fail(ready_.error());
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
            return failf(Errno{errno}, "socketpair");
        mpqemu::MpqemuServerSettings s;
        s.fd = sv[0];  // taken over
        s.io_timeout_ms = 2000;
        s.label = "contract";
        auto server = mpqemu::MpqemuServer::create(model(), s);
        if (!server) {
            ::close(sv[1]);
            return fail(server.error());
        }
        server_.start(std::move(server).value());
        // The opener takes a dup of the fd; ours is closed right after.
        auto dev = transports_.open("mpqemu-fd:" + std::to_string(sv[1]), ctx);
        ::close(sv[1]);
        return dev;
    }
    void kill() override { server_.stop(); }
    Result<void> server_result() const override { return server_.result(); }

  private:
    hostdev::TransportRegistry transports_;
    Result<void> ready_;
    ServerThread<mpqemu::MpqemuServer> server_;
};

inline std::unique_ptr<TransportHarness> make_harness(TransportKind k) {
    switch (k) {
        case TransportKind::inproc:
            return std::make_unique<InprocHarness>();
        case TransportKind::vfio_user:
            return std::make_unique<VfioUserHarness>();
        case TransportKind::vfio_user_messages:
            return std::make_unique<VfioUserHarness>(false);
        case TransportKind::mpqemu:
            return std::make_unique<MpqemuHarness>();
    }
    return nullptr;
}

}  // namespace potemkin::testing

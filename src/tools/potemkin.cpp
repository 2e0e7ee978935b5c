// potemkin: the command line. `potemkin run VM.xml` runs a VM; more commands join as the
// transports land (serve, probe).
#include <CLI/CLI.hpp>

#include <unistd.h>

#include <climits>
#include <cstdio>
#include <filesystem>

#include "common/log.hpp"
#include "common/unique_fd.hpp"
#include "cpu/engine_factory.hpp"
#include "machine/builtins.hpp"
#include "machine/machine.hpp"
#include "mpqemu/server.hpp"
#include "sdk/device_model.hpp"
#include "sdk/serve_loop.hpp"
#include "tools/conform.hpp"
#include "tools/probe.hpp"
#include "tools/qemu_proxy.hpp"
#include "tools/trace_command.hpp"
#include "vfio_user/server.hpp"

namespace {

using namespace potemkin;

// This executable (for the children qemu-proxy starts).
std::string self_exe() {
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) return "potemkin";
    buf[n] = 0;
    return buf;
}

// The directory holding this executable: guests built next to it live in <dir>/guests.
std::string self_dir() {
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) return ".";
    buf[n] = 0;
    return std::filesystem::path(buf).parent_path().string();
}

// The built-in models, transports and device classes; false (and a message) if they could not
// be registered.
bool registered(const char* who) {
    if (auto r = machine::register_builtins(); !r) {
        std::fprintf(stderr, "%s: %s\n", who, r.error().message.c_str());
        return false;
    }
    return true;
}

struct RunOptions {
    std::string config;
    std::string guest;
    std::string trace;
    double timeout = 0;
    unsigned max_resets = machine::MachineSettings{}.max_resets;
    std::string engine;  // empty: <vm engine>, else the default
    bool verbose = false;
};

int run_command(const RunOptions& o) {
    if (o.verbose) log::set_level(log::Level::info);
    auto doc = vm::ConfigDocument::load_file(o.config);
    if (!doc) {
        std::fprintf(stderr, "potemkin: %s\n", doc.error().message.c_str());
        return 2;
    }
    auto cfg = vm::parse_vm_config(*doc);
    if (!cfg) {
        std::fprintf(stderr, "potemkin: %s\n", cfg.error().message.c_str());
        return 2;
    }
    machine::MachineSettings s;
    s.config = std::move(*cfg);
    if (!o.guest.empty()) s.guest_override = o.guest;
    if (!o.trace.empty()) s.trace_path = o.trace;
    if (o.timeout > 0)
        s.timeout = std::chrono::milliseconds(static_cast<int64_t>(o.timeout * 1000));
    s.max_resets = o.max_resets;
    s.engine = o.engine;
    s.guest_search_path = {self_dir() + "/guests"};
    auto m = machine::Machine::create(std::move(s));
    if (!m) {
        std::fprintf(stderr, "potemkin: %s\n", m.error().message.c_str());
        return 2;
    }
    machine::RunResult r = (*m)->run();
    if (r.outcome != machine::RunOutcome::exited)
        std::fprintf(stderr, "potemkin: %s\n", r.message.c_str());
    return r.process_status();
}

struct ServeOptions {
    std::string model;
    std::string socket;
    int fd = -1;
    int mpqemu_fd = -1;
    std::vector<std::string> params;
    std::string dma_layout = "auto";
    uint32_t poll_us = 50;
    bool no_fast_path = false;
    bool verbose = false;
};

// The server for the options' transport: vfio-user on a socket path or an inherited listening
// socket, or mpqemu on an inherited connected socket (QEMU's x-pci-proxy-dev: one connection).
Result<std::unique_ptr<sdk::DeviceServer>> make_server(const ServeOptions& o,
                                                       std::unique_ptr<sdk::DeviceModel> model,
                                                       int stop_fd) {
    if (o.mpqemu_fd >= 0) {
        mpqemu::MpqemuServerSettings s;
        s.fd = o.mpqemu_fd;
        s.stop_fd = stop_fd;
        s.label = o.model;
        POTEMKIN_TRY_ASSIGN(auto server, mpqemu::MpqemuServer::create(std::move(model), s));
        log::info("potemkin serve: {} on mpqemu fd {}", o.model, o.mpqemu_fd);
        return std::unique_ptr<sdk::DeviceServer>(std::move(server));
    }
    vfio_user::VfioUserServerSettings s;
    POTEMKIN_TRY_ASSIGN(s.dma_layout, vfio_user::parse_dma_layout_setting(o.dma_layout));
    s.poll_us = o.poll_us;
    s.fast_path = !o.no_fast_path;
    s.socket_path = o.socket;
    s.listen_fd = o.fd;
    s.stop_fd = stop_fd;
    s.label = o.model;
    POTEMKIN_TRY_ASSIGN(auto server, vfio_user::VfioUserServer::create(std::move(model), s));
    if (!o.socket.empty())
        std::fprintf(stderr, "potemkin serve: %s on %s\n", o.model.c_str(), o.socket.c_str());
    else
        std::fprintf(stderr, "potemkin serve: %s on fd %d\n", o.model.c_str(), o.fd);
    return std::unique_ptr<sdk::DeviceServer>(std::move(server));
}

int serve_command(const ServeOptions& o) {
    if (o.verbose) log::set_level(log::Level::info);
    if (!registered("potemkin serve")) return 1;
    const int transports = int{!o.socket.empty()} + int{o.fd >= 0} + int{o.mpqemu_fd >= 0};
    if (transports != 1) {
        std::fprintf(stderr,
                     "potemkin serve: give exactly one of --socket PATH, --fd N and "
                     "--mpqemu-fd N\n");
        return 2;
    }
    sdk::ModelParams params;
    for (const std::string& p : o.params) {
        auto eq = p.find('=');
        if (eq == std::string::npos || eq == 0) {
            std::fprintf(stderr, "potemkin serve: --param '%s' is not KEY=VALUE\n", p.c_str());
            return 2;
        }
        params[p.substr(0, eq)] = p.substr(eq + 1);
    }
    auto model = sdk::ModelRegistry::builtin().create(o.model, params);
    if (!model) {
        std::fprintf(stderr, "potemkin serve: %s\n", model.error().message.c_str());
        return 2;
    }
    // SIGTERM and SIGINT arrive through a signalfd the server polls: a clean exit from the
    // loop, with the socket file removed, instead of dying inside a handler.
    auto stop_signals = sdk::stop_signal_fd();
    if (!stop_signals) {
        std::fprintf(stderr, "potemkin serve: %s\n", stop_signals.error().message.c_str());
        return 1;
    }
    auto server = make_server(o, std::move(model).value(), stop_signals->get());
    if (!server) {
        std::fprintf(stderr, "potemkin serve: %s\n", server.error().message.c_str());
        return 1;
    }
    auto r = (*server)->run();
    server->reset();
    if (!r) {
        std::fprintf(stderr, "potemkin serve: %s\n", r.error().message.c_str());
        return 1;
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"potemkin: project PCI devices implemented outside the VMM into a guest"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "potemkin 0.1.0");

    RunOptions run;
    auto* cmd = app.add_subcommand("run", "Run a VM described by a Palacios-style XML file");
    cmd->add_option("config", run.config, "VM configuration (XML)")
        ->required()
        ->check(CLI::ExistingFile);
    cmd->add_option("--guest", run.guest, "Guest ELF image, overriding <guest file>")
        ->check(CLI::ExistingFile);
    cmd->add_option("--trace", run.trace,
                    "Write one record per device access (with its duration) and per device "
                    "interrupt, DMA transfer and link event to FILE (docs/trace.md; read it "
                    "with potemkin trace)");
    cmd->add_option("--timeout", run.timeout, "End the run after SEC seconds (exit status 124)")
        ->check(CLI::PositiveNumber);
    cmd->add_option("--max-resets", run.max_resets,
                    "VM resets the guest may trigger (0xcf9); the next one is a fault (exit "
                    "status 126)")
        ->capture_default_str();
    cmd->add_option("--engine", run.engine,
                    fmt::format("CPU engine: {}, or {} (kvm when /dev/kvm is usable, else "
                                "unicorn); overrides <vm engine>; default {}",
                                cpu::engine_names(), cpu::kAutoEngine, cpu::kDefaultEngine));
    cmd->add_flag("-v,--verbose", run.verbose, "Log device events");
    cmd->footer(
        "Exit status: the guest's exit value (port 0xf4) & 0xff; 2 configuration or usage error;\n"
        "124 timeout; 125 every vCPU halted with no interrupt to wake it; 126 guest fault.");
    cmd->callback([&] { std::exit(run_command(run)); });

    std::string probe_url;
    auto* probe = app.add_subcommand(
        "probe", "Open a host device by URL and print an lspci -vv-like view of it");
    probe->add_option("url", probe_url, "Host-device URL, e.g. inproc:edu or vfio-user:/run/x.sock")
        ->required();
    probe->callback([&] {
        if (!registered("potemkin probe")) std::exit(1);
        std::exit(tools::probe_command(probe_url));
    });

    tools::add_trace_command(app);

    tools::ConformOptions conform;
    auto* cf = app.add_subcommand(
        "conform",
        "Check a vfio-user server against the protocol specification: every command, well "
        "formed and malformed; prints check -> pass/fail/skip, spec section, detail");
    cf->add_option("target", conform.target, "vfio-user:/path/to/socket");
    cf->add_option("--only", conform.only,
                   "Run only the checks matching PATTERN (a glob with * ? [ ], else a substring)");
    cf->add_option("--timeout-ms", conform.timeout_ms,
                   "Longest wait for one reply; a check gets at most 4 of these")
        ->capture_default_str()
        ->check(CLI::Range(1, 600000));
    cf->add_flag("--json", conform.json, "Print JSON instead of the table");
    cf->add_flag("--list", conform.list, "List the checks and their spec sections, run nothing");
    cf->add_flag("-v,--verbose", conform.verbose, "Show what passing checks saw");
    cf->footer(
        "Each check runs with a deadline; checks that may end a connection use a fresh one.\n"
        "Exit status: the number of failed checks (at most 125); 126 the checks could not run;\n"
        "2 a usage error.");
    cf->callback([&] {
        if (conform.target.empty() && !conform.list) {
            std::fprintf(stderr, "potemkin conform: a target vfio-user:/path is required\n");
            std::exit(2);
        }
        std::exit(tools::conform_command(conform));
    });

    ServeOptions serve;
    auto* srv = app.add_subcommand(
        "serve",
        "Serve a device model to vfio-user clients (one at a time) on a UNIX socket, or to QEMU's "
        "x-pci-proxy-dev (--mpqemu-fd)");
    srv->add_option("model", serve.model, "Model name (edu, multibar, ...)")->required();
    auto* sock_opt = srv->add_option("--socket", serve.socket,
                                     "Listen on this path (a stale socket is removed)");
    auto* fd_opt =
        srv->add_option("--fd", serve.fd,
                        "Use this inherited fd: a listening socket, or one connected client")
            ->excludes(sock_opt);
    auto* mp_opt =
        srv->add_option(
               "--mpqemu-fd", serve.mpqemu_fd,
               "Serve QEMU's x-pci-proxy-dev (mpqemu protocol) on this inherited, connected "
               "socket; exits when QEMU closes it")
            ->excludes(sock_opt)
            ->excludes(fd_opt);
    srv->add_option("--param", serve.params, "Model parameter KEY=VALUE (repeatable)");
    srv->add_option("--dma-layout", serve.dma_layout,
                    "DMA_READ/DMA_WRITE layout for DMA by message: auto (QEMU's for QEMU's "
                    "client, else the spec's), spec or qemu")
        ->check(CLI::IsMember({"auto", "spec", "qemu"}))
        ->excludes(mp_opt);
    srv->add_option("--poll-us", serve.poll_us,
                    "Fast path (docs/fast-path.md): poll the shared area for N microseconds "
                    "after the last access before sleeping on an eventfd; 0 = never poll. A "
                    "busy core for that long against a wake-up per access after a pause")
        ->capture_default_str()
        ->check(CLI::Range(0u, 1000000u))
        ->excludes(mp_opt);
    srv->add_flag("--no-fast-path", serve.no_fast_path,
                  "Do not offer the shared-memory fast path: plain vfio-user for every client")
        ->excludes(mp_opt);
    srv->add_flag("-v,--verbose", serve.verbose, "Log connections and requests");
    srv->footer(
        "Exits 0 on SIGTERM/SIGINT (and, with --mpqemu-fd, when QEMU closes the socket); 1 on a "
        "socket\nerror or, with --mpqemu-fd, a protocol violation; 2 on a usage error.");
    srv->callback([&] { std::exit(serve_command(serve)); });

    tools::QemuProxyOptions proxy;
    auto* qp = app.add_subcommand(
        "qemu-proxy",
        "Run qemu-system-x86_64 with a device model plugged in as -device x-pci-proxy-dev");
    qp->add_option("model", proxy.model, "Model name (edu, multibar, ...)")->required();
    qp->add_option("qemu-args", proxy.qemu_args,
                   "Extra QEMU arguments, after --: -kernel, -initrd, -append ...");
    qp->add_option("--param", proxy.params, "Model parameter KEY=VALUE (repeatable)");
    qp->add_option("--qemu", proxy.qemu, "QEMU binary")->capture_default_str();
    qp->add_option("--memory", proxy.memory_mib, "Guest RAM in MiB (memfd-backed, shared)")
        ->capture_default_str()
        ->check(CLI::Range(16u, 65536u));
    qp->add_option("--slot", proxy.slot, "PCI slot of the device")
        ->capture_default_str()
        ->check(CLI::Range(1u, 31u));
    qp->add_option("--timeout", proxy.timeout, "Stop QEMU after SEC seconds (exit status 124)")
        ->check(CLI::PositiveNumber);
    qp->add_flag("-v,--verbose", proxy.verbose,
                 "The device server logs resets, interrupt setup and a summary");
    qp->footer(
        "Example: potemkin qemu-proxy edu -- -kernel vmlinuz -initrd initrd.gz -append "
        "console=ttyS0\nExit status: QEMU's (128 + signal if killed); 124 timeout; 1 a process "
        "could not start.\nThe guest ends QEMU with status (v << 1) | 1 by writing v to port "
        "0xf4 (isa-debug-exit).");
    qp->callback([&] {
        // An unknown model fails here, before QEMU starts.
        if (!registered("potemkin qemu-proxy")) std::exit(1);
        sdk::ModelParams params;
        for (const std::string& p : proxy.params) {
            auto eq = p.find('=');
            if (eq == std::string::npos || eq == 0) {
                std::fprintf(stderr, "potemkin qemu-proxy: --param '%s' is not KEY=VALUE\n",
                             p.c_str());
                std::exit(2);
            }
            params[p.substr(0, eq)] = p.substr(eq + 1);
        }
        if (auto m = sdk::ModelRegistry::builtin().create(proxy.model, params); !m) {
            std::fprintf(stderr, "potemkin qemu-proxy: %s\n", m.error().message.c_str());
            std::exit(2);
        }
        std::exit(tools::qemu_proxy_command(proxy, self_exe()));
    });

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        int rc = app.exit(e);
        return rc == 0 ? 0 : 2;
    }
    return 0;
}

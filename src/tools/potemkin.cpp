// potemkin: the command line. `potemkin run VM.xml` runs a VM; more commands join as the
// transports land (serve, probe).
#include <CLI/CLI.hpp>

#include <unistd.h>

#include <climits>
#include <cstdio>
#include <filesystem>

#include "common/log.hpp"
#include "machine/builtins.hpp"
#include "machine/machine.hpp"
#include "tools/probe.hpp"

namespace {

using namespace potemkin;

// The directory holding this executable: guests built next to it live in <dir>/guests.
std::string self_dir() {
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) return ".";
    buf[n] = 0;
    return std::filesystem::path(buf).parent_path().string();
}

struct RunOptions {
    std::string config;
    std::string guest;
    std::string trace;
    double timeout = 0;
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
                    "Write one record per device access to FILE (docs/trace.md)");
    cmd->add_option("--timeout", run.timeout, "End the run after SEC seconds (exit status 124)")
        ->check(CLI::PositiveNumber);
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
        machine::register_builtins();
        std::exit(tools::probe_command(probe_url));
    });

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        int rc = app.exit(e);
        return rc == 0 ? 0 : 2;
    }
    return 0;
}

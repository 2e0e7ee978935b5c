// `potemkin qemu-proxy MODEL -- QEMU-ARGS...`: runs a QEMU guest with a potemkin device model
// plugged in through QEMU's x-pci-proxy-dev (docs/interop.md). Creates a socketpair,
// starts `potemkin serve MODEL --mpqemu-fd N` on one end and qemu-system-x86_64 with
// `-device x-pci-proxy-dev,fd=M` on the other, guest RAM memfd-backed and shared (so the model
// can DMA), then waits for QEMU and returns its exit status.
#pragma once

#include <string>
#include <vector>

namespace potemkin::tools {

struct QemuProxyOptions {
    std::string model;
    std::vector<std::string> params;  // KEY=VALUE, passed to `potemkin serve --param`
    std::string qemu = "qemu-system-x86_64";
    unsigned memory_mib = 256;           // guest RAM; edu's 28-bit DMA mask covers 256 MiB
    unsigned slot = 5;                   // PCI slot (addr=) of the proxied device
    double timeout = 0;                  // seconds; 0 = none. Kills QEMU and returns 124
    bool verbose = false;                // -v for the server
    std::vector<std::string> qemu_args;  // appended to the QEMU command line
};

// The QEMU command line (argv) for a proxy socket at `fd`.
std::vector<std::string> qemu_proxy_argv(const QemuProxyOptions& o, int fd);

// Returns QEMU's exit status (128 + signal if it was killed), 124 on timeout, 2 on a usage
// error, 1 if a process could not be started.
int qemu_proxy_command(const QemuProxyOptions& o, const std::string& potemkin_exe);

}  // namespace potemkin::tools

// Spawning QEMU as a device process: `qemu-system-x86_64 -machine x-remote` hosting one device
// for the mpqemu client (docs/interop.md, "QEMU hosts the device, potemkin is the front-end").
//
// The child inherits exactly one end of a socketpair (at fd 3, given to QEMU as
// `x-remote-object,fd=3`), /dev/null as stdin and stdout, and a pipe as stderr; every other fd
// is closed in the child. A thread reads the pipe and logs each line prefixed with the label and
// the pid, keeping the last few KiB for error messages.
//
// Startup race (../shared/protocols/qemu-interop.md): x-remote serves the socket before its
// initial system reset, which wipes BARs programmed in that window. launch() therefore waits
// until QMP `query-status` reports running before it returns.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/result.hpp"
#include "common/unique_fd.hpp"

namespace potemkin::mpqemu {

struct QemuLaunchSettings {
    std::string binary = "qemu-system-x86_64";  // searched in PATH when it has no '/'
    std::string device;                         // the -device driver, e.g. "nvme"
    // Properties appended to -device as given (after id=dev0 and the drive's id).
    std::vector<std::pair<std::string, std::string>> device_props;
    std::string drive;  // raw image path for `drive=`; empty: none
    std::string label;  // names the process in log lines and errors (the URL)
    std::chrono::milliseconds timeout{10000};  // until QMP reports running
};

// The argument vector (argv[0] included) for a remote that serves its socket at fd `socket_fd`
// and its QMP monitor at `qmp_path`. QEMU's option parser reads ",," as a literal comma, so
// commas in the drive path are doubled.
std::vector<std::string> qemu_remote_command(const QemuLaunchSettings& s, int socket_fd,
                                             const std::string& qmp_path);

class QemuProcess {
  public:
    // Spawns QEMU and waits until it runs. `socket` receives the client's end of the
    // socketpair. Errors name the label and include QEMU's stderr.
    static Result<std::unique_ptr<QemuProcess>> launch(const QemuLaunchSettings& settings,
                                                       UniqueFd& socket);
    ~QemuProcess();
    QemuProcess(const QemuProcess&) = delete;
    QemuProcess& operator=(const QemuProcess&) = delete;

    pid_t pid() const { return pid_; }
    // The last few KiB QEMU wrote to stderr.
    std::string stderr_tail() const;
    // SIGTERM, up to `grace` for it to exit, then SIGKILL; reaps it and joins the log thread.
    // Idempotent. Returns the wait status (or -1 when it was already reaped).
    int terminate(std::chrono::milliseconds grace = std::chrono::milliseconds(2000));

  private:
    QemuProcess() = default;
    void read_stderr(UniqueFd pipe);
    bool exited_now(int* status);  // non-blocking reap

    std::string label_;
    pid_t pid_ = -1;
    bool reaped_ = false;
    int status_ = -1;
    std::string dir_;  // private temporary directory holding the QMP socket
    std::thread log_thread_;
    mutable std::mutex tail_mu_;
    std::string tail_;
};

}  // namespace potemkin::mpqemu

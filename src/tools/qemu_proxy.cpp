#include "tools/qemu_proxy.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "common/unique_fd.hpp"

namespace potemkin::tools {

namespace {

using Clock = std::chrono::steady_clock;

// Exec `argv` in a child with `keep` inherited (CLOEXEC cleared) and the signal mask the
// launcher started with. Returns the pid, or -1.
pid_t spawn(const std::vector<std::string>& argv, int keep, const sigset_t& mask) {
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid != 0) return pid;
    const char* step = "sigprocmask";
    if (::sigprocmask(SIG_SETMASK, &mask, nullptr) == 0) {
        step = "fcntl";
        const int flags = ::fcntl(keep, F_GETFD);
        if (flags >= 0 && ::fcntl(keep, F_SETFD, flags & ~FD_CLOEXEC) == 0) {
            step = "exec";
            ::execvp(args[0], args.data());
        }
    }
    std::fprintf(stderr, "potemkin qemu-proxy: %s %s: %s\n", step, args[0], std::strerror(errno));
    ::_exit(127);
}

int exit_status(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return 1;
}

// Sends `sig` to `pid`; a child that is gone already (ESRCH) is no failure.
void send_signal(pid_t pid, int sig) {
    if (::kill(pid, sig) != 0 && errno != ESRCH)
        std::fprintf(stderr, "potemkin qemu-proxy: kill %d: %s\n", static_cast<int>(pid),
                     std::strerror(errno));
}

// Waits for `pid` at most `ms` milliseconds; true (and *status set) when it ended.
bool wait_for(pid_t pid, int ms, int* status) {
    const auto end = Clock::now() + std::chrono::milliseconds(ms);
    while (true) {
        const pid_t r = ::waitpid(pid, status, WNOHANG);
        if (r == pid || (r < 0 && errno == ECHILD)) return true;
        if (r < 0 && errno != EINTR) {
            std::fprintf(stderr, "potemkin qemu-proxy: waitpid %d: %s\n", static_cast<int>(pid),
                         std::strerror(errno));
            return true;
        }
        if (Clock::now() >= end) return false;
        ::usleep(10000);
    }
}

// SIGTERM, then SIGKILL after 5 s.
int finish(pid_t pid) {
    int status = 0;
    if (wait_for(pid, 0, &status)) return status;
    send_signal(pid, SIGTERM);
    if (wait_for(pid, 5000, &status)) return status;
    send_signal(pid, SIGKILL);
    while (::waitpid(pid, &status, 0) < 0) {
        if (errno == EINTR) continue;
        std::fprintf(stderr, "potemkin qemu-proxy: waitpid %d: %s\n", static_cast<int>(pid),
                     std::strerror(errno));
        break;
    }
    return status;
}

}  // namespace

std::vector<std::string> qemu_proxy_argv(const QemuProxyOptions& o, int fd) {
    const std::string mem = std::to_string(o.memory_mib) + "M";
    std::vector<std::string> argv = {
        o.qemu, "-machine", "pc,accel=tcg", "-cpu", "max", "-m", mem,
        // Guest RAM in a shared memfd: x-pci-proxy-dev sends it with SYNC_SYSMEM, which is what
        // makes the model's DMA possible (anonymous RAM cannot be shared).
        "-object", "memory-backend-memfd,id=sysmem-file,size=" + mem + ",share=on", "-numa",
        "node,memdev=sysmem-file", "-nodefaults", "-display", "none", "-serial", "stdio",
        "-monitor", "none", "-no-reboot",
        // The guest ends QEMU with a status: exit code = (value << 1) | 1.
        "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-device",
        "x-pci-proxy-dev,id=dev0,fd=" + std::to_string(fd) + ",addr=" + std::to_string(o.slot)};
    argv.insert(argv.end(), o.qemu_args.begin(), o.qemu_args.end());
    return argv;
}

int qemu_proxy_command(const QemuProxyOptions& o, const std::string& potemkin_exe) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        std::perror("potemkin qemu-proxy: socketpair");
        return 1;
    }
    UniqueFd server_end(sv[0]), qemu_end(sv[1]);

    // SIGCHLD, SIGTERM and SIGINT through a signalfd: QEMU's exit, or a request to stop it.
    sigset_t handled, original;
    sigemptyset(&handled);
    sigaddset(&handled, SIGCHLD);
    sigaddset(&handled, SIGTERM);
    sigaddset(&handled, SIGINT);
    if (::sigprocmask(SIG_BLOCK, &handled, &original) != 0) {
        std::perror("potemkin qemu-proxy: sigprocmask");
        return 1;
    }
    UniqueFd sigfd(::signalfd(-1, &handled, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!sigfd) {
        std::perror("potemkin qemu-proxy: signalfd");
        return 1;
    }

    std::vector<std::string> serve = {potemkin_exe, "serve", o.model, "--mpqemu-fd",
                                      std::to_string(server_end.get())};
    for (const auto& p : o.params) {
        serve.push_back("--param");
        serve.push_back(p);
    }
    if (o.verbose) serve.push_back("-v");
    const pid_t server = spawn(serve, server_end.get(), original);
    if (server < 0) {
        std::perror("potemkin qemu-proxy: fork");
        return 1;
    }
    server_end.reset();
    const pid_t qemu = spawn(qemu_proxy_argv(o, qemu_end.get()), qemu_end.get(), original);
    if (qemu < 0) {
        std::perror("potemkin qemu-proxy: fork");
        finish(server);
        return 1;
    }
    qemu_end.reset();

    const bool timed = o.timeout > 0;
    const auto deadline =
        Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(o.timeout * 1000));
    int qemu_status = 0;
    bool qemu_done = false, server_done = false, timed_out = false;
    int server_status = 0;
    while (!qemu_done) {
        int wait_ms = -1;
        if (timed) {
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
            wait_ms = static_cast<int>(std::max<int64_t>(left.count(), 0));
        }
        pollfd p{sigfd.get(), POLLIN, 0};
        const int n = ::poll(&p, 1, wait_ms);
        if (n < 0 && errno != EINTR) {
            std::perror("potemkin qemu-proxy: poll");
            break;
        }
        if (n == 0 && timed && Clock::now() >= deadline) {
            std::fprintf(stderr, "potemkin qemu-proxy: timeout after %g s; stopping QEMU\n",
                         o.timeout);
            timed_out = true;
            qemu_status = finish(qemu);
            qemu_done = true;
            break;
        }
        signalfd_siginfo si{};
        while (::read(sigfd.get(), &si, sizeof si) == sizeof si) {
            if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) send_signal(qemu, SIGTERM);
        }
        if (!qemu_done && ::waitpid(qemu, &qemu_status, WNOHANG) == qemu) qemu_done = true;
        if (!server_done && ::waitpid(server, &server_status, WNOHANG) == server) {
            server_done = true;
            if (!qemu_done) {
                // The device is gone: the guest would only read all-ones from now on.
                std::fprintf(stderr,
                             "potemkin qemu-proxy: the device server exited (status %d) before "
                             "QEMU; stopping QEMU\n",
                             exit_status(server_status));
                qemu_status = finish(qemu);
                qemu_done = true;
            }
        }
    }
    if (!qemu_done) qemu_status = finish(qemu);
    // QEMU closed its end, so the server sees EOF and exits by itself.
    if (!server_done) {
        if (!wait_for(server, 5000, &server_status)) server_status = finish(server);
    }
    if (exit_status(server_status) != 0)
        std::fprintf(stderr, "potemkin qemu-proxy: the device server exited with status %d\n",
                     exit_status(server_status));
    if (::sigprocmask(SIG_SETMASK, &original, nullptr) != 0)
        std::perror("potemkin qemu-proxy: restoring the signal mask");
    if (timed_out) return 124;
    return exit_status(qemu_status);
}

}  // namespace potemkin::tools

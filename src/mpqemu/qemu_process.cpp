#include "mpqemu/qemu_process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "common/log.hpp"

extern char** environ;

namespace potemkin::mpqemu {

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kChildSocketFd = 3;
constexpr size_t kTailBytes = 4096;

std::string errno_text(std::string_view what, int e) {
    return fmt::format("{}: {}", what, std::strerror(e));
}

std::string qemu_escape(std::string_view s) {
    std::string out;
    for (char c : s) {
        out += c;
        if (c == ',') out += ',';
    }
    return out;
}

int ms_left(Clock::time_point deadline) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return static_cast<int>(std::max<int64_t>(0, left));
}

// A QMP connection that reads newline-separated JSON objects. Just enough JSON for the
// handshake and query-status: QEMU prints each reply on one line.
class QmpLines {
  public:
    explicit QmpLines(UniqueFd fd) : fd_(std::move(fd)) {}

    Result<std::string> next(Clock::time_point deadline) {
        for (;;) {
            const auto nl = buf_.find('\n');
            if (nl != std::string::npos) {
                std::string line = buf_.substr(0, nl);
                buf_.erase(0, nl + 1);
                return line;
            }
            pollfd p{fd_.get(), POLLIN, 0};
            const int n = ::poll(&p, 1, ms_left(deadline));
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) return fail(errno_text("QMP poll", errno), errno);
            if (n == 0) return fail("no answer on QMP in time", ETIMEDOUT);
            char chunk[1024];
            const ssize_t got = ::recv(fd_.get(), chunk, sizeof chunk, 0);
            if (got < 0 && errno == EINTR) continue;
            if (got < 0) return fail(errno_text("QMP recv", errno), errno);
            if (got == 0) return fail("QEMU closed its QMP socket", ECONNRESET);
            buf_.append(chunk, static_cast<size_t>(got));
        }
    }

    Result<void> send(std::string_view text) {
        size_t done = 0;
        while (done < text.size()) {
            const ssize_t n =
                ::send(fd_.get(), text.data() + done, text.size() - done, MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) return fail(errno_text("QMP send", errno), errno);
            done += static_cast<size_t>(n);
        }
        return ok();
    }

    // Sends a command and returns the reply line with all whitespace removed (events skipped).
    Result<std::string> execute(std::string_view command, Clock::time_point deadline) {
        POTEMKIN_TRY(send(fmt::format("{{\"execute\": \"{}\"}}\n", command)));
        for (;;) {
            auto line = next(deadline);
            if (!line) return fail(line.error());
            std::string compact;
            for (char c : *line)
                if (c != ' ' && c != '\t' && c != '\r') compact += c;
            if (compact.rfind("{\"event\"", 0) == 0) continue;
            if (compact.find("\"error\"") != std::string::npos)
                return failf("QMP {} failed: {}", command, *line);
            if (compact.find("\"return\"") != std::string::npos) return compact;
        }
    }

  private:
    UniqueFd fd_;
    std::string buf_;
};

Result<UniqueFd> connect_qmp(const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) return failf("QMP path '{}' is too long", path);
    std::memcpy(addr.sun_path, path.data(), path.size());
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return fail(errno_text("socket", errno), errno);
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0)
        return fail(errno_text(fmt::format("connect {}", path), errno), errno);
    return fd;
}

std::string describe_status(int status) {
    if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return fmt::format("was killed by signal {}", WTERMSIG(status));
    return fmt::format("ended (wait status {:#x})", status);
}

}  // namespace

std::vector<std::string> qemu_remote_command(const QemuLaunchSettings& s, int socket_fd,
                                             const std::string& qmp_path) {
    std::vector<std::string> argv = {s.binary, "-machine", "x-remote", "-nodefaults", "-display",
                                     "none",   "-monitor", "none",     "-serial",     "none"};
    std::string device = fmt::format("{},id=dev0", s.device);
    if (!s.drive.empty()) {
        argv.push_back("-drive");
        argv.push_back(fmt::format("file={},if=none,id=drive0,format=raw", qemu_escape(s.drive)));
        device += ",drive=drive0";
    }
    for (const auto& [k, v] : s.device_props) device += fmt::format(",{}={}", k, v);
    argv.push_back("-device");
    argv.push_back(device);
    argv.push_back("-object");
    argv.push_back(fmt::format("x-remote-object,id=robj0,devid=dev0,fd={}", socket_fd));
    argv.push_back("-qmp");
    argv.push_back(fmt::format("unix:{},server=on,wait=off", qmp_path));
    return argv;
}

QemuProcess::~QemuProcess() {
    terminate();
}

std::string QemuProcess::stderr_tail() const {
    std::lock_guard lk(tail_mu_);
    return tail_;
}

void QemuProcess::read_stderr(UniqueFd pipe) {
    std::string pending;
    char chunk[1024];
    auto emit = [&](std::string_view line) {
        log::info("{}: qemu[{}]: {}", label_, pid_, line);
        std::lock_guard lk(tail_mu_);
        tail_.append(line);
        tail_ += '\n';
        if (tail_.size() > kTailBytes) tail_.erase(0, tail_.size() - kTailBytes);
    };
    for (;;) {
        const ssize_t n = ::read(pipe.get(), chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        pending.append(chunk, static_cast<size_t>(n));
        size_t nl;
        while ((nl = pending.find('\n')) != std::string::npos) {
            emit(std::string_view(pending).substr(0, nl));
            pending.erase(0, nl + 1);
        }
    }
    if (!pending.empty()) emit(pending);
}

bool QemuProcess::exited_now(int* status) {
    if (reaped_) {
        *status = status_;
        return true;
    }
    int st = 0;
    pid_t r;
    do {
        r = ::waitpid(pid_, &st, WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r == pid_) {
        reaped_ = true;
        status_ = st;
        *status = st;
        return true;
    }
    return false;
}

int QemuProcess::terminate(std::chrono::milliseconds grace) {
    if (pid_ > 0 && !reaped_) {
        int st = 0;
        if (!exited_now(&st)) {
            ::kill(pid_, SIGTERM);
            const auto deadline = Clock::now() + grace;
            while (!exited_now(&st) && Clock::now() < deadline) ::usleep(2000);
            if (!reaped_) {
                ::kill(pid_, SIGKILL);
                pid_t r;
                do {
                    r = ::waitpid(pid_, &st, 0);
                } while (r < 0 && errno == EINTR);
                reaped_ = true;
                status_ = st;
            }
        }
    }
    if (log_thread_.joinable()) log_thread_.join();
    if (!dir_.empty()) {
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
        dir_.clear();
    }
    return reaped_ ? status_ : -1;
}

Result<std::unique_ptr<QemuProcess>> QemuProcess::launch(const QemuLaunchSettings& s,
                                                         UniqueFd& socket) {
    std::unique_ptr<QemuProcess> p(new QemuProcess());
    p->label_ = s.label.empty() ? fmt::format("qemu:{}", s.device) : s.label;
    const std::string& label = p->label_;

    // Private directory for the QMP socket.
    std::string tmpl = (std::filesystem::temp_directory_path() / "potemkin-qemu-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr)
        return failf("{}: mkdtemp {}: {}", label, tmpl, std::strerror(errno));
    p->dir_ = tmpl;
    const std::string qmp_path = tmpl + "/qmp.sock";

    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return failf("{}: socketpair: {}", label, std::strerror(errno));
    UniqueFd ours(sv[0]), theirs(sv[1]);
    int pfd[2];
    if (::pipe2(pfd, O_CLOEXEC) != 0) return failf("{}: pipe: {}", label, std::strerror(errno));
    UniqueFd err_r(pfd[0]), err_w(pfd[1]);
    // Move the child's fds above the numbers they get in the child, so each dup2 changes the
    // number (a dup2 onto itself would keep close-on-exec).
    UniqueFd theirs_hi(::fcntl(theirs.get(), F_DUPFD_CLOEXEC, 10));
    UniqueFd err_hi(::fcntl(err_w.get(), F_DUPFD_CLOEXEC, 10));
    if (!theirs_hi || !err_hi) return failf("{}: fcntl: {}", label, std::strerror(errno));
    theirs.reset();
    err_w.reset();

    const auto argv_s = qemu_remote_command(s, kChildSocketFd, qmp_path);
    std::vector<char*> argv;
    for (const auto& a : argv_s) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, err_hi.get(), 2);
    posix_spawn_file_actions_adddup2(&fa, theirs_hi.get(), kChildSocketFd);
    posix_spawn_file_actions_addclosefrom_np(&fa, kChildSocketFd + 1);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    // The child starts with default signal dispositions and an empty mask.
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    pid_t pid = -1;
    const int rc = ::posix_spawnp(&pid, argv[0], &fa, &attr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) return failf("{}: cannot start {}: {}", label, s.binary, std::strerror(rc));
    p->pid_ = pid;
    theirs_hi.reset();
    err_hi.reset();
    log::info("{}: started qemu[{}]: {}", label, pid, fmt::join(argv_s, " "));
    auto pipe = std::make_shared<UniqueFd>(std::move(err_r));
    p->log_thread_ = std::thread([raw = p.get(), pipe] { raw->read_stderr(std::move(*pipe)); });

    // Wait until QMP says the VM runs (after QEMU's initial reset).
    const auto deadline = Clock::now() + s.timeout;
    auto failure = [&](std::string why) {
        // A QMP error usually means QEMU is on its way out: report how it ended when it does.
        int st = 0;
        for (int i = 0; i < 200 && !p->exited_now(&st); ++i) ::usleep(5000);
        if (p->reaped_) why = fmt::format("qemu[{}] {} ({})", pid, describe_status(st), why);
        p->terminate(std::chrono::milliseconds(500));
        const std::string tail = p->stderr_tail();
        return failf("{}: QEMU did not come up: {}{}{}", label, why,
                     tail.empty() ? "" : "; its stderr:\n", tail);
    };
    std::unique_ptr<QmpLines> qmp;
    for (;;) {
        int st = 0;
        if (p->exited_now(&st)) {
            if (p->log_thread_.joinable()) p->log_thread_.join();
            p->terminate();
            const std::string tail = p->stderr_tail();
            return failf("{}: QEMU did not come up: qemu[{}] {}{}{}", label, pid,
                         describe_status(st), tail.empty() ? "" : "; its stderr:\n", tail);
        }
        if (Clock::now() >= deadline)
            return failure(
                fmt::format("QMP did not report running within {} ms", s.timeout.count()));
        if (!qmp) {
            auto fd = connect_qmp(qmp_path);
            if (!fd) {
                ::usleep(5000);
                continue;
            }
            qmp = std::make_unique<QmpLines>(std::move(*fd));
            auto greeting = qmp->next(deadline);
            if (!greeting) return failure(greeting.error().message);
            auto caps = qmp->execute("qmp_capabilities", deadline);
            if (!caps) return failure(caps.error().message);
        }
        auto status = qmp->execute("query-status", deadline);
        if (!status) return failure(status.error().message);
        if (status->find("\"running\":true") != std::string::npos) break;
        ::usleep(10000);
    }
    socket = std::move(ours);
    return p;
}

}  // namespace potemkin::mpqemu

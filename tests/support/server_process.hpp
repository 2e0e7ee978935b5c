// `potemkin serve MODEL --socket PATH` (or `--mpqemu-fd N` on a socketpair) as a child
// process, for tests and benchmarks that need a real device server in another process.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace potemkin::testing {

using namespace std::chrono_literals;

// A system call that failed where no result can flow (destructors, cleanup): say so.
inline void report_errno(const char* what) {
    std::fprintf(stderr, "server_process: %s: %s\n", what, std::strerror(errno));
}
inline void close_reporting(int fd) {
    if (fd >= 0 && ::close(fd) != 0) report_errno("close");
}
// Removes a socket or log file; one that is not there is fine.
inline void unlink_reporting(const std::string& path) {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) report_errno(("unlink " + path).c_str());
}
// Signals a child; one that has exited already (ESRCH) is fine.
inline void kill_reporting(pid_t pid, int sig) {
    if (::kill(pid, sig) != 0 && errno != ESRCH) report_errno("kill");
}
// Reaps a child, blocking.
inline void reap(pid_t pid) {
    while (::waitpid(pid, nullptr, 0) < 0) {
        if (errno == EINTR) continue;
        report_errno("waitpid");
        return;
    }
}

inline bool connectable(const std::string& path) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        report_errno("socket");
        return false;
    }
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    close_reporting(fd);
    return ok;
}

class ServerProcess {
  public:
    explicit ServerProcess(std::string path, std::string model = "edu")
        : path_(std::move(path)), model_(std::move(model)) {}
    ~ServerProcess() {
        stop();
        unlink_reporting(path_);
        if (!log_path_.empty()) unlink_reporting(log_path_);
    }

    // Starts the server and waits (at most 10 s) until it accepts connections.
    bool start() {
        unlink_reporting(path_);  // a server killed with SIGKILL leaves its socket behind
        pid_ = ::fork();
        if (pid_ < 0) return false;
        if (pid_ == 0) {
            if (!log_path_.empty()) {
                const int log_fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
                if (log_fd < 0 || ::dup2(log_fd, 2) != 2) ::_exit(126);
            }
            std::vector<const char*> argv{"potemkin", "serve", model_.c_str(), "--socket",
                                          path_.c_str()};
            for (const auto& p : params_) {
                argv.push_back("--param");
                argv.push_back(p.c_str());
            }
            for (const auto& a : args_) argv.push_back(a.c_str());
            argv.push_back(nullptr);
            ::execv(POTEMKIN_BINARY, const_cast<char* const*>(argv.data()));
            ::_exit(127);
        }
        const auto end = std::chrono::steady_clock::now() + 10s;
        while (std::chrono::steady_clock::now() < end) {
            struct stat st {};
            // Probing with a connection is harmless: the server takes the next client after.
            if (::stat(path_.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && connectable(path_))
                return true;
            int status = 0;
            if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                pid_ = -1;
                return false;
            }
            std::this_thread::sleep_for(10ms);
        }
        return false;
    }
    // Model parameters ("key=value") for the next start().
    void set_params(std::vector<std::string> params) { params_ = std::move(params); }
    // More `potemkin serve` options ("--poll-us", "0") for the next start().
    void set_args(std::vector<std::string> args) { args_ = std::move(args); }
    pid_t pid() const { return pid_; }
    // The server's stderr goes to this file (appended; removed with the object) instead of the
    // test's, from the next start() on.
    void set_log(std::string path) { log_path_ = std::move(path); }
    std::string log() const {
        std::ifstream f(log_path_);
        std::stringstream ss;
        ss << f.rdbuf();
        return ss.str();
    }
    bool running() const { return pid_ > 0; }
    void kill_hard() { finish(SIGKILL); }
    void stop() { finish(SIGTERM); }
    // Sends `sig` and returns (SIGSTOP, SIGCONT).
    void signal(int sig) {
        if (pid_ > 0) kill_reporting(pid_, sig);
    }

  private:
    void finish(int sig) {
        if (pid_ <= 0) return;
        kill_reporting(pid_, sig);
        // Bounded: a server that ignores SIGTERM for 5 s gets SIGKILL.
        for (int i = 0; i < 500; ++i) {
            if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
                pid_ = -1;
                return;
            }
            std::this_thread::sleep_for(10ms);
        }
        kill_reporting(pid_, SIGKILL);
        reap(pid_);
        pid_ = -1;
    }

    std::string path_;
    std::string model_;
    std::vector<std::string> params_;
    std::vector<std::string> args_;
    std::string log_path_;
    pid_t pid_ = -1;
};

// `potemkin serve MODEL --mpqemu-fd N`: the server inherits one end of a socketpair, the test
// plays QEMU's x-pci-proxy-dev on the other (sock()). The server's stderr goes to a file
// (log()).
class MpqemuServerProcess {
  public:
    explicit MpqemuServerProcess(std::string model = "edu", std::vector<std::string> extra = {})
        : model_(std::move(model)), extra_(std::move(extra)) {}
    ~MpqemuServerProcess() {
        close_reporting(sock_);
        if (pid_ > 0) {
            kill_reporting(pid_, SIGKILL);
            reap(pid_);
        }
        if (!log_path_.empty()) unlink_reporting(log_path_);
    }

    // Before start().
    void set_model(std::string model) { model_ = std::move(model); }
    // Arguments after the model (e.g. {"--param", "pcie=1"}), for the next start().
    void set_extra(std::vector<std::string> extra) { extra_ = std::move(extra); }

    bool start() {
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return false;
        char path[] = "/tmp/potemkin-mpqemu-serve-XXXXXX";
        const int log_fd = ::mkstemp(path);
        if (log_fd < 0) {
            report_errno("mkstemp");
            close_reporting(sv[0]);
            close_reporting(sv[1]);
            return false;
        }
        log_path_ = path;
        const std::string fd_arg = std::to_string(sv[0]);
        std::vector<std::string> args = {"potemkin", "serve", model_, "--mpqemu-fd", fd_arg};
        args.insert(args.end(), extra_.begin(), extra_.end());
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        pid_ = ::fork();
        if (pid_ < 0) {
            report_errno("fork");
            close_reporting(log_fd);
            close_reporting(sv[0]);
            close_reporting(sv[1]);
            return false;
        }
        if (pid_ == 0) {
            // sv[0] is inherited across exec; stderr goes to the log.
            if (::fcntl(sv[0], F_SETFD, 0) == 0 && ::dup2(log_fd, 2) == 2)
                ::execv(POTEMKIN_BINARY, argv.data());
            ::_exit(127);
        }
        close_reporting(log_fd);
        close_reporting(sv[0]);
        sock_ = sv[1];
        return true;
    }
    int sock() const { return sock_; }
    pid_t pid() const { return pid_; }
    // Closes our end: the server sees EOF.
    void close_socket() {
        close_reporting(sock_);
        sock_ = -1;
    }
    void signal(int sig) const {
        if (pid_ > 0) kill_reporting(pid_, sig);
    }
    // The wait status once the server exited (waiting at most `timeout`), else nullopt.
    std::optional<int> wait_exit(std::chrono::milliseconds timeout = 10s) {
        if (pid_ <= 0) return status_;
        const auto end = std::chrono::steady_clock::now() + timeout;
        while (true) {
            int status = 0;
            if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                pid_ = -1;
                status_ = status;
                return status_;
            }
            if (std::chrono::steady_clock::now() >= end) return std::nullopt;
            std::this_thread::sleep_for(5ms);
        }
    }
    // How many fds the server process has open now.
    int open_fds() const {
        int n = 0;
        DIR* d = ::opendir(("/proc/" + std::to_string(pid_) + "/fd").c_str());
        if (d == nullptr) return -1;
        while (dirent* e = ::readdir(d))
            if (e->d_name[0] != '.') ++n;
        if (::closedir(d) != 0) report_errno("closedir");
        return n;
    }
    std::string log() const {
        std::ifstream f(log_path_);
        std::stringstream ss;
        ss << f.rdbuf();
        return ss.str();
    }

  private:
    std::string model_;
    std::vector<std::string> extra_;
    std::string log_path_;
    int sock_ = -1;
    pid_t pid_ = -1;
    std::optional<int> status_;
};

}  // namespace potemkin::testing

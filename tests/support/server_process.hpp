// `potemkin serve MODEL --socket PATH` as a child process, for tests and benchmarks that
// need a real device server in another process.
#pragma once

#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace potemkin::testing {

using namespace std::chrono_literals;

inline bool connectable(const std::string& path) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    return ok;
}

class ServerProcess {
  public:
    explicit ServerProcess(std::string path, std::string model = "edu")
        : path_(std::move(path)), model_(std::move(model)) {}
    ~ServerProcess() {
        stop();
        ::unlink(path_.c_str());
    }

    // Starts the server and waits (at most 10 s) until it accepts connections.
    bool start() {
        ::unlink(path_.c_str());  // a server killed with SIGKILL leaves its socket behind
        pid_ = ::fork();
        if (pid_ < 0) return false;
        if (pid_ == 0) {
            std::vector<const char*> argv{"potemkin", "serve", model_.c_str(), "--socket",
                                          path_.c_str()};
            for (const auto& p : params_) {
                argv.push_back("--param");
                argv.push_back(p.c_str());
            }
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
    void kill_hard() { finish(SIGKILL); }
    void stop() { finish(SIGTERM); }

  private:
    void finish(int sig) {
        if (pid_ <= 0) return;
        ::kill(pid_, sig);
        // Bounded: a server that ignores SIGTERM for 5 s gets SIGKILL.
        for (int i = 0; i < 500; ++i) {
            if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
                pid_ = -1;
                return;
            }
            std::this_thread::sleep_for(10ms);
        }
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }

    std::string path_;
    std::string model_;
    std::vector<std::string> params_;
    pid_t pid_ = -1;
};

}  // namespace potemkin::testing

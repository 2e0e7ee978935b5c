// Runs a guest from guests/ in a real VM and collects what it did. The CPU engine is
// POTEMKIN_TEST_ENGINE's ("unicorn" when unset), so `POTEMKIN_TEST_ENGINE=kvm guest_tests` runs
// the whole suite on KVM.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "machine/machine.hpp"

namespace potemkin::testing {

struct GuestRun {
    machine::RunOutcome outcome = machine::RunOutcome::fault;
    int status = -1;      // as `potemkin run` would exit
    std::string console;  // everything the guest printed
    std::string message;  // the VMM's message (fault report, ...)
};

struct GuestVm {
    std::string guest;        // name in guests/, without .elf
    std::string guest_file;   // or a path to any guest ELF (takes precedence)
    std::string devices_xml;  // inner XML of <devices>
    std::string files_xml;    // inner XML of <files>; none when empty
    std::string cmdline;
    unsigned cores = 1;
    unsigned memory_mib = 64;
    int timeout_ms = 30000;
    std::string trace_path;
    unsigned max_resets = machine::MachineSettings{}.max_resets;
};

// The engine the guest tests run on: POTEMKIN_TEST_ENGINE, else "unicorn".
inline std::string test_engine() {
    const char* e = std::getenv("POTEMKIN_TEST_ENGINE");
    return e && *e ? std::string(e) : std::string("unicorn");
}
inline bool testing_kvm() {
    return test_engine() == "kvm";
}

inline std::string guest_path(const std::string& name) {
    return std::string(POTEMKIN_GUEST_DIR) + "/" + name + ".elf";
}

inline std::string vm_xml(const GuestVm& g) {
    const std::string file = g.guest_file.empty() ? guest_path(g.guest) : g.guest_file;
    return "<vm class=\"PC\">\n  <memory>" + std::to_string(g.memory_mib) +
           "</memory>\n  <cores count=\"" + std::to_string(g.cores) + "\"/>\n  <guest file=\"" +
           file + "\" cmdline=\"" + g.cmdline + "\"/>\n" +
           (g.files_xml.empty() ? "" : "  <files>\n" + g.files_xml + "\n  </files>\n") +
           "  <devices>\n" + g.devices_xml + "\n  </devices>\n</vm>\n";
}

inline GuestRun run_guest(const GuestVm& g) {
    GuestRun out;
    auto doc = vm::ConfigDocument::load_string(vm_xml(g), "test.xml");
    if (!doc) {
        out.message = doc.error().message;
        return out;
    }
    auto cfg = vm::parse_vm_config(*doc);
    if (!cfg) {
        out.message = cfg.error().message;
        return out;
    }
    machine::MachineSettings s;
    s.config = std::move(*cfg);
    s.engine = test_engine();
    s.timeout = std::chrono::milliseconds(g.timeout_ms);
    s.max_resets = g.max_resets;
    s.console = [&out](std::string_view text) { out.console.append(text); };
    if (!g.trace_path.empty()) s.trace_path = g.trace_path;
    auto m = machine::Machine::create(std::move(s));
    if (!m) {
        out.message = m.error().message;
        return out;
    }
    auto r = (*m)->run();
    out.outcome = r.outcome;
    out.status = r.process_status();
    out.message = r.message;
    return out;
}

// A guest running on its own thread while the test acts on the world around it (kills its
// device servers, ...), watching what the guest prints.
class LiveGuest {
  public:
    explicit LiveGuest(const GuestVm& g) {
        auto doc = vm::ConfigDocument::load_string(vm_xml(g), "test.xml");
        if (!doc) {
            error_ = doc.error().message;
            return;
        }
        auto cfg = vm::parse_vm_config(*doc);
        if (!cfg) {
            error_ = cfg.error().message;
            return;
        }
        machine::MachineSettings s;
        s.config = std::move(*cfg);
        s.engine = test_engine();
        s.timeout = std::chrono::milliseconds(g.timeout_ms);
        if (!g.trace_path.empty()) s.trace_path = g.trace_path;
        s.console = [this](std::string_view text) {
            {
                std::lock_guard lk(mu_);
                console_.append(text);
            }
            cv_.notify_all();
        };
        auto m = machine::Machine::create(std::move(s));
        if (!m) {
            error_ = m.error().message;
            return;
        }
        machine_ = std::move(*m);
        thread_ = std::thread([this] { result_ = machine_->run(); });
    }
    ~LiveGuest() { join(); }
    LiveGuest(const LiveGuest&) = delete;
    LiveGuest& operator=(const LiveGuest&) = delete;

    // Empty when the VM runs; else why it could not be built.
    const std::string& error() const { return error_; }
    machine::Machine& machine() { return *machine_; }

    // Occurrences of `text` in the console so far.
    size_t count(const std::string& text) {
        std::lock_guard lk(mu_);
        return count_locked(text);
    }
    // Waits until `text` occurs more than `than` times (once: than = 0).
    bool wait_more(const std::string& text, size_t than, std::chrono::seconds limit) {
        std::unique_lock lk(mu_);
        return cv_.wait_for(lk, limit, [&] { return count_locked(text) > than; });
    }
    bool wait_for(const std::string& text, std::chrono::seconds limit) {
        return wait_more(text, 0, limit);
    }
    std::string console() {
        std::lock_guard lk(mu_);
        return console_;
    }
    // Waits for the run to end (bounded by the VM's timeout).
    const machine::RunResult& join() {
        if (thread_.joinable()) thread_.join();
        return result_;
    }

  private:
    size_t count_locked(const std::string& text) const {
        size_t n = 0;
        for (size_t at = console_.find(text); at != std::string::npos;
             at = console_.find(text, at + 1))
            ++n;
        return n;
    }

    std::string error_;
    std::unique_ptr<machine::Machine> machine_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::string console_;
    machine::RunResult result_;
    std::thread thread_;
};

// For assertion messages.
inline std::string describe(const GuestRun& r) {
    return "status " + std::to_string(r.status) + "\n--- console ---\n" + r.console +
           "\n--- vmm ---\n" + r.message;
}

}  // namespace potemkin::testing

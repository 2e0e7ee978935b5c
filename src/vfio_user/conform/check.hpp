// The checker's inside: what a check is, what it is given (the device as discovered, a
// connection), and the judging helpers every check uses. One file per group of checks
// (checks_*.cpp) adds its checks to the list in the order they run.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"
#include "vfio_user/conform/conform.hpp"
#include "vfio_user/conform/session.hpp"
#include "vfio_user/protocol.hpp"

namespace potemkin::vfio_user::conform {

// What the first connection learnt about the device: VERSION, DEVICE_GET_INFO, every
// DEVICE_GET_REGION_INFO (with room for capabilities) and every DEVICE_GET_IRQ_INFO.
struct DeviceFacts {
    bool known = false;
    std::string why_unknown;  // when !known
    Version version;
    DeviceInfo info;
    std::vector<RegionInfo> regions;  // by index; size 0 for a region whose info failed
    std::vector<IrqInfo> irqs;        // by index

    const RegionInfo* region(uint32_t index) const {
        return index < regions.size() ? &regions[index] : nullptr;
    }
    // The first irq index with at least `min_count` interrupts and EVENTFD, preferring MSI-X,
    // then MSI, then INTx.
    std::optional<IrqInfo> irq_with(uint32_t min_count) const;
};

struct Verdict {
    Status status = Status::pass;
    std::string detail;
    static Verdict pass(std::string note = {}) { return {Status::pass, std::move(note)}; }
    static Verdict fail(std::string why) { return {Status::fail, std::move(why)}; }
    static Verdict skip(std::string why) { return {Status::skip, std::move(why)}; }
};

// Set when a connection attempt found no server (refused, or not accepted in time): the
// remaining checks then fail at once instead of each waiting for its timeout.
struct Reachability {
    std::string lost;  // the failed attempt's error, empty while the server accepts
};

class Context {
  public:
    Context(const ConformSettings& settings, const DeviceFacts& facts, Session* shared,
            Clock::time_point deadline, Reachability& reach)
        : settings_(settings), facts_(facts), shared_(shared), deadline_(deadline), reach_(reach) {}

    const DeviceFacts& facts() const { return facts_; }
    // A connection past VERSION: the shared one for checks that leave the connection in a known
    // state, a new one otherwise.
    Result<Session*> session();
    // A new connection, nothing sent yet.
    Result<Session> raw();
    // A second new connection past VERSION (the server is alive and accepts again).
    Result<Session> fresh();

  private:
    const ConformSettings& settings_;
    const DeviceFacts& facts_;
    Session* shared_;
    Clock::time_point deadline_;
    Reachability& reach_;
    std::optional<Session> own_;
};

// A check: an Error is a failure whose detail is the error's message (so POTEMKIN_TRY works).
using CheckFn = Result<Verdict> (*)(Context&);
struct Check {
    const char* name;
    const char* section;  // the section title in docs/interop/vfio-user.rst
    bool fresh;           // may break or desynchronise the connection: runs on its own
    CheckFn fn;
};

void add_header_checks(std::vector<Check>& out);
void add_version_checks(std::vector<Check>& out);
void add_dma_checks(std::vector<Check>& out);
void add_device_checks(std::vector<Check>& out);
void add_irq_checks(std::vector<Check>& out);
void add_access_checks(std::vector<Check>& out);
void add_final_checks(std::vector<Check>& out);
// Every check, in order.
std::vector<Check> all_checks();

// ---- Judging replies ---------------------------------------------------------------------------

// "EINVAL", "errno 4242".
std::string errno_name(uint32_t e);
// A reply in words: "success, 24 payload bytes", "error EINVAL".
std::string describe(const Message& m);

// `got` must be a success reply to `req` (type reply, same msg_id and cmd, no ERROR flag).
Result<Message> judge_ok(const Header& req, Result<Message> got);

struct ErrorWanted {
    int errno_value = 0;    // 0: any errno
    bool close_ok = false;  // closing the connection is an acceptable answer too
};
// `got` must be an error reply to `req`: header only (the spec: "If an error occurs, the reply
// message must only include the reply header"), the wanted errno. Returns what was seen.
Result<std::string> judge_error(const Header& req, Result<Message> got, ErrorWanted want = {});

// Send a command and judge its reply.
Result<Message> request_ok(Session& s, Command cmd, std::span<const uint8_t> payload,
                           std::span<const int> fds = {});
Result<std::string> request_error(Session& s, Command cmd, std::span<const uint8_t> payload,
                                  std::span<const int> fds = {}, ErrorWanted want = {});

// A reply's payload must not exceed what the request's argsz allowed ("Message sizes").
Result<void> check_within_argsz(const Message& reply, uint32_t request_argsz);

// Little-endian field access on byte vectors (payload building and patching).
void put_u32(std::vector<uint8_t>& b, size_t at, uint32_t v);
void put_u64(std::vector<uint8_t>& b, size_t at, uint64_t v);
uint32_t get_u32(std::span<const uint8_t> b, size_t at);

// Shorthand for the verdict of a check that failed on a condition.
template <typename... Args>
Verdict failv(fmt::format_string<Args...> f, Args&&... args) {
    return Verdict::fail(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace potemkin::vfio_user::conform

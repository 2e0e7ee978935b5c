// `potemkin conform` as a user runs it: a real `potemkin serve` (or a deliberately broken server
// in this process) on a real socket, the checker as a real process, its JSON and exit status.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>

#include "server_process.hpp"
#include "vfio_user/protocol.hpp"
#include "vfio_user/socket.hpp"

namespace {

using namespace potemkin;
namespace vu = potemkin::vfio_user;

// The checks our server is known to fail: none. Every check passes or is skipped (with the
// reason) for each shipped model.
const std::set<std::string> kKnownServerFailures = {};

struct ConformRun {
    int status = -1;
    std::string out;  // stdout
    nlohmann::json json;
    std::map<std::string, std::string> result;  // check → pass/fail/skip
    std::map<std::string, std::string> detail;
    std::set<std::string> failed() const {
        std::set<std::string> out_set;
        for (const auto& [name, r] : result)
            if (r == "fail") out_set.insert(name);
        return out_set;
    }
};

ConformRun run_conform(const std::string& args) {
    ConformRun r;
    const std::string cmd = std::string(POTEMKIN_BINARY) + " conform " + args;
    FILE* p = popen(cmd.c_str(), "r");
    if (p == nullptr) return r;
    std::array<char, 4096> buf;
    size_t n;
    while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
    const int st = pclose(p);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    r.json = nlohmann::json::parse(r.out, nullptr, false);
    if (r.json.is_object() && r.json.contains("checks"))
        for (const auto& c : r.json["checks"]) {
            r.result[c["name"]] = c["result"];
            r.detail[c["name"]] = c["detail"];
        }
    return r;
}

std::string describe_failures(const ConformRun& r) {
    std::string s;
    for (const auto& name : r.failed()) s += name + ": " + r.detail.at(name) + "\n";
    return s;
}

size_t check_count() {
    FILE* p = popen((std::string(POTEMKIN_BINARY) + " conform --list").c_str(), "r");
    if (p == nullptr) return 0;
    size_t lines = 0;
    int c;
    while ((c = fgetc(p)) != EOF)
        if (c == '\n') ++lines;
    return pclose(p) == 0 ? lines : 0;
}

struct ModelCase {
    std::string model;
    std::vector<std::string> params;
    std::set<std::string> skipped;  // checks that do not apply to this model
};

class ConformAgainstModel : public ::testing::TestWithParam<ModelCase> {};

TEST_P(ConformAgainstModel, RunsEveryCheckAndFailsOnlyTheKnownOnes) {
    const ModelCase& m = GetParam();
    const std::string path = ::testing::TempDir() + "/conform-" + m.model + ".sock";
    potemkin::testing::ServerProcess server(path, m.model);
    server.set_params(m.params);
    ASSERT_TRUE(server.start());
    const ConformRun r = run_conform("--json vfio-user:" + path);
    ASSERT_TRUE(r.json.is_object()) << r.out;
    // Every check ran (and discovery), none hung the checker.
    EXPECT_EQ(r.result.size(), check_count() + 1) << r.out;
    EXPECT_EQ(r.result.at("connect.discovery"), "pass") << r.detail.at("connect.discovery");
    EXPECT_EQ(r.failed(), kKnownServerFailures) << describe_failures(r);
    EXPECT_EQ(r.status, static_cast<int>(r.failed().size()));
    std::set<std::string> skipped;
    for (const auto& [name, result] : r.result)
        if (result == "skip") skipped.insert(name);
    EXPECT_EQ(skipped, m.skipped);
}

INSTANTIATE_TEST_SUITE_P(EveryShippedModel, ConformAgainstModel,
                         ::testing::Values(ModelCase{"edu",
                                                     {},
                                                     {"region_info.argsz_without_room_for_caps",
                                                      "region_info.mmap_areas_mappable",
                                                      "set_irqs.fewer_fds_than_count"}},
                                           ModelCase{"multibar", {}, {}},
                                           ModelCase{"multibar",
                                                     {"mmap=0"},
                                                     {"region_info.argsz_without_room_for_caps",
                                                      "region_info.mmap_areas_mappable"}}),
                         [](const auto& test_info) {
                             std::string n = test_info.param.model;
                             for (const auto& p : test_info.param.params)
                                 for (char c : p)
                                     n += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                             return n;
                         });

TEST(Conform, OnlySelectsByNameAndGlob) {
    const std::string path = ::testing::TempDir() + "/conform-only.sock";
    potemkin::testing::ServerProcess server(path, "edu");
    ASSERT_TRUE(server.start());
    ConformRun r = run_conform("--json --only 'set_irqs.*' vfio-user:" + path);
    ASSERT_TRUE(r.json.is_object()) << r.out;
    for (const auto& [name, result] : r.result)
        EXPECT_TRUE(name == "connect.discovery" || name.starts_with("set_irqs.")) << name;
    EXPECT_GT(r.result.size(), 10u);
    r = run_conform("--json --only dma_map.with_fd vfio-user:" + path);
    EXPECT_EQ(r.result.size(), 2u) << r.out;
    EXPECT_EQ(r.result["dma_map.with_fd"], "pass");
    EXPECT_EQ(r.status, 0);
}

TEST(Conform, NoServerFailsEveryCheckQuickly) {
    const ConformRun r = run_conform("--json --timeout-ms 200 vfio-user:" + ::testing::TempDir() +
                                     "/conform-nobody.sock");
    ASSERT_TRUE(r.json.is_object()) << r.out;
    EXPECT_EQ(r.result.at("connect.discovery"), "fail");
    EXPECT_EQ(r.status, std::min<int>(125, static_cast<int>(r.failed().size())));
    EXPECT_GT(r.failed().size(), 20u);
}

// ---- A deliberately broken server ------------------------------------------------------------

enum class Broken {
    silent,        // accepts, reads, never answers
    yes_to_all,    // a correct VERSION, then a header-only success reply to everything
    wrong_msg_id,  // a correct VERSION, then replies whose msg_id is off by one
    garbage,       // a correct VERSION, then a reply header claiming 4 GiB
};

// Serves one connection after another on `path` until destroyed.
class BrokenServer {
  public:
    BrokenServer(std::string path, Broken how) : path_(std::move(path)), how_(how) {
        listen_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strncpy(a.sun_path, path_.c_str(), sizeof a.sun_path - 1);
        potemkin::testing::unlink_reporting(path_);
        ok_ = listen_ && ::bind(listen_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
              ::listen(listen_.get(), 8) == 0;
        if (ok_) thread_ = std::thread([this] { loop(); });
    }
    ~BrokenServer() {
        stop_ = true;
        if (thread_.joinable()) thread_.join();
        potemkin::testing::unlink_reporting(path_);
    }
    bool ok() const { return ok_; }

  private:
    void loop() {
        while (!stop_) {
            pollfd p{listen_.get(), POLLIN, 0};
            if (::poll(&p, 1, 50) <= 0) continue;
            UniqueFd c(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
            if (c) serve(c.get());
        }
    }
    void serve(int fd) {
        vu::RecvOptions o;
        o.timeout_ms = 50;
        while (!stop_) {
            auto m = vu::recv_message(fd, o);
            if (!m && m.error().sys_errno == ETIMEDOUT) continue;
            if (!m) return;
            if (how_ == Broken::silent) continue;
            if (m->header.cmd == static_cast<uint16_t>(vu::Command::version)) {
                vu::Version v;
                const auto p = vu::encode_version(v);
                if (!vu::send_message(fd, vu::reply_header(m->header), p)) return;
                continue;
            }
            vu::Header h = vu::reply_header(m->header);
            if (how_ == Broken::wrong_msg_id) h.msg_id += 1;
            if (how_ == Broken::garbage) {
                auto bytes = vu::encode_header(h);
                const uint32_t huge = 0xffffffff;
                std::memcpy(bytes.data() + 4, &huge, 4);
                if (!vu::send_raw(fd, bytes)) return;
                continue;
            }
            if (!vu::send_message(fd, h)) return;
        }
    }

    std::string path_;
    Broken how_;
    UniqueFd listen_;
    bool ok_ = false;
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

ConformRun against_broken(Broken how, const char* name) {
    const std::string path = ::testing::TempDir() + "/conform-broken-" + name + ".sock";
    BrokenServer server(path, how);
    EXPECT_TRUE(server.ok());
    return run_conform("--json --timeout-ms 300 vfio-user:" + path);
}

TEST(ConformAgainstBrokenServer, SilentServerFailsEveryCheckWithoutHanging) {
    const ConformRun r = against_broken(Broken::silent, "silent");
    ASSERT_TRUE(r.json.is_object()) << r.out;
    EXPECT_EQ(r.result.size(), check_count() + 1);
    EXPECT_EQ(r.result.at("connect.discovery"), "fail");
    EXPECT_NE(r.detail.at("connect.discovery").find("no reply within 300 ms"), std::string::npos)
        << r.detail.at("connect.discovery");
    for (const auto& [name, result] : r.result) EXPECT_NE(result, "pass") << name;
    EXPECT_EQ(r.status, std::min<int>(125, static_cast<int>(r.failed().size())));
}

TEST(ConformAgainstBrokenServer, YesToAllFailsTheChecksThatNeedAnError) {
    const ConformRun r = against_broken(Broken::yes_to_all, "yes");
    ASSERT_TRUE(r.json.is_object()) << r.out;
    EXPECT_EQ(r.result.size(), check_count() + 1);
    // Discovery itself fails: a 0-byte DEVICE_GET_INFO reply cannot be decoded.
    EXPECT_EQ(r.result.at("connect.discovery"), "fail");
    for (const char* name : {"header.command_before_version", "version.json_without_nul",
                             "version.bad_json", "version.major_mismatch"}) {
        EXPECT_EQ(r.result.at(name), "fail") << name;
    }
    EXPECT_NE(r.detail.at("version.bad_json").find("expected an error reply, got success"),
              std::string::npos)
        << r.detail.at("version.bad_json");
    EXPECT_EQ(r.result.at("version.reply"), "pass");
    EXPECT_EQ(r.status, std::min<int>(125, static_cast<int>(r.failed().size())));
}

TEST(ConformAgainstBrokenServer, WrongMessageIdIsNamed) {
    const ConformRun r = against_broken(Broken::wrong_msg_id, "msgid");
    ASSERT_TRUE(r.json.is_object()) << r.out;
    EXPECT_EQ(r.result.at("connect.discovery"), "fail");
    EXPECT_NE(r.detail.at("connect.discovery").find("the reply echoes the message ID"),
              std::string::npos)
        << r.detail.at("connect.discovery");
}

TEST(ConformAgainstBrokenServer, GarbageFramingIsAFailureNotACrash) {
    const ConformRun r = against_broken(Broken::garbage, "garbage");
    ASSERT_TRUE(r.json.is_object()) << r.out;
    EXPECT_EQ(r.result.size(), check_count() + 1);
    EXPECT_EQ(r.result.at("connect.discovery"), "fail");
    EXPECT_EQ(r.status, std::min<int>(125, static_cast<int>(r.failed().size())));
}

}  // namespace

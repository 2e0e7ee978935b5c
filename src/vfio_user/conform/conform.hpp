// `potemkin conform vfio-user:SOCK`: a conformance checker for any vfio-user server. It connects
// to the server's socket as a client would, sends every command the specification defines, well
// formed and malformed, and judges each reply against the specification (QEMU
// docs/interop/vfio-user.rst; each check names the section it rests on).
//
// State: every client-to-server command of protocol 0.2 except the migration ones
// (DEVICE_FEATURE, MIG_DATA_READ/WRITE) and REGION_WRITE_MULTI, which a server only has to
// support after negotiating them.
// Robustness: each check has a deadline (a hung server fails the check, the checker goes on);
// replies are decoded with bounds checks and every received fd is closed; checks that may end a
// connection get a fresh one.
// Missing: twin-socket negotiation, server-initiated DMA (DMA_READ/DMA_WRITE answering), the
// migration commands.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.hpp"

namespace potemkin::vfio_user::conform {

struct ConformSettings {
    std::string socket_path;
    // The longest wait for any one reply; a check as a whole gets a few of these.
    int timeout_ms = 2000;
    // Only checks whose name matches: a glob (fnmatch) if it holds * ? or [, else a substring.
    std::string only;
};

enum class Status { pass, fail, skip };
const char* status_name(Status s);

struct CheckResult {
    std::string name;     // "dma_map.overlap_eexist"
    std::string section;  // the specification's section title, e.g. "VFIO_USER_DMA_MAP"
    Status status = Status::pass;
    std::string detail;  // why it failed or was skipped; on a pass, what was seen (may be empty)
};

// Runs the (selected) checks in order. Only a bad setting is an Error; an unreachable server is
// a failed check, reported like any other.
Result<std::vector<CheckResult>> run_checks(const ConformSettings& settings);

// Every check's name and section, in the order run_checks runs them.
std::vector<CheckResult> list_checks();

// The table: check, result, spec section, detail (failures and skips; passes' notes only with
// `verbose`), then a summary line.
std::string format_table(const std::vector<CheckResult>& results, bool verbose);
// One JSON object: {"checks":[{"name","section","result","detail"}...],"pass":N,"fail":N,"skip":N}.
std::string format_json(const std::vector<CheckResult>& results);
// The process status: the number of failures, at most 125.
int exit_status(const std::vector<CheckResult>& results);

}  // namespace potemkin::vfio_user::conform

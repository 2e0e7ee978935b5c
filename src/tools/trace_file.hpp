// Reading a --trace file (docs/trace.md): format v2, and v1 (accesses without durations).
// A malformed file is an error naming the file, the line and the column, never a crash.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"

namespace potemkin::tools {

enum class RecordKind : uint8_t { io, mmio, intx, msi, msix, dma, link, note };
std::string_view kind_name(RecordKind k);

// One line of a trace. Columns a record kind leaves empty ("-") are nullopt or "".
struct TraceRecord {
    size_t line = 0;  // 1-based, in the file
    uint64_t time_ns = 0;
    std::optional<uint64_t> dur_ns;  // accesses (v2)
    std::optional<unsigned> vcpu;    // accesses and notes
    RecordKind kind = RecordKind::note;
    std::string op;      // R, W, assert, deassert, send, drop, lost, back; "" for notes
    std::string device;  // "" for unassigned space
    std::optional<uint64_t> address;
    std::optional<uint64_t> size;
    std::optional<uint64_t> value;
    std::string region;  // BASE+LENGTH, lineN, vectorN; "" when none
    std::string detail;  // free text; "" when none

    bool is_access() const { return kind == RecordKind::io || kind == RecordKind::mmio; }
};

struct Trace {
    unsigned version = 0;  // 1 or 2
    std::vector<TraceRecord> records;
};

// `text` is the file's content, `name` names it in errors ("t.tsv:12: ...").
Result<Trace> parse_trace(std::string_view text, std::string_view name);
// Reads and parses the file at `path`.
Result<Trace> load_trace(const std::string& path);

}  // namespace potemkin::tools

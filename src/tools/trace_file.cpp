#include "tools/trace_file.hpp"

#include <array>
#include <charconv>
#include <limits>

#include "common/file.hpp"

namespace potemkin::tools {

namespace {

constexpr std::string_view kMagic = "# potemkin trace v";
constexpr size_t kV2Columns = 11;
constexpr uint64_t kMaxTraceBytes = uint64_t{1} << 30;

constexpr std::array<std::string_view, kV2Columns> kV2Names = {
    "time_ns", "dur_ns", "vcpu",  "kind",   "op",    "device",
    "address", "size",   "value", "region", "detail"};

std::vector<std::string_view> split_tabs(std::string_view line) {
    std::vector<std::string_view> out;
    size_t start = 0;
    for (;;) {
        const size_t tab = line.find('\t', start);
        if (tab == std::string_view::npos) {
            out.push_back(line.substr(start));
            return out;
        }
        out.push_back(line.substr(start, tab - start));
        start = tab + 1;
    }
}

// One line being parsed: errors name the file, the line and the column.
class LineParser {
  public:
    LineParser(std::string_view name, size_t line, std::vector<std::string_view> fields,
               const std::string_view* names)
        : name_(name), line_(line), fields_(std::move(fields)), names_(names) {}

    Error error(size_t col, std::string_view what) const {
        return Error{
            fmt::format("{}:{}: column {} ({}): {}", name_, line_, col + 1, names_[col], what)};
    }
    std::string_view at(size_t col) const { return fields_[col]; }
    bool dash(size_t col) const { return fields_[col] == "-"; }

    Result<uint64_t> decimal(size_t col) const { return number(col, 10); }
    Result<uint64_t> hex(size_t col) const {
        std::string_view t = fields_[col];
        if (t.size() < 3 || t[0] != '0' || (t[1] != 'x' && t[1] != 'X'))
            return fail(error(
                col, fmt::format("'{}' is not a 0x-prefixed hexadecimal number", printable(t))));
        return number(col, 16, 2);
    }
    Result<std::optional<uint64_t>> optional_decimal(size_t col) const {
        if (dash(col)) return std::optional<uint64_t>{};
        POTEMKIN_TRY_ASSIGN(uint64_t v, decimal(col));
        return std::optional<uint64_t>{v};
    }
    Result<std::optional<uint64_t>> optional_hex(size_t col) const {
        if (dash(col)) return std::optional<uint64_t>{};
        POTEMKIN_TRY_ASSIGN(uint64_t v, hex(col));
        return std::optional<uint64_t>{v};
    }
    // The field, if it is one of `allowed` (string literals: the view outlives the line).
    Result<std::string_view> one_of(size_t col,
                                    std::initializer_list<std::string_view> allowed) const {
        for (std::string_view a : allowed)
            if (fields_[col] == a) return a;
        std::string list;
        for (std::string_view a : allowed)
            list += fmt::format("{}'{}'", list.empty() ? "" : ", ", a);
        return fail(
            error(col, fmt::format("'{}' is not one of {}", printable(fields_[col]), list)));
    }
    static std::string printable(std::string_view t) {
        std::string s;
        for (char c : t.substr(0, 40)) s += (c >= 0x20 && c < 0x7f) ? c : '?';
        if (t.size() > 40) s += "...";
        return s;
    }

  private:
    Result<uint64_t> number(size_t col, int base, size_t skip = 0) const {
        std::string_view t = fields_[col];
        uint64_t v = 0;
        const char* first = t.data() + skip;
        const char* last = t.data() + t.size();
        auto [p, ec] = std::from_chars(first, last, v, base);
        if (first == last || ec != std::errc{} || p != last)
            return fail(error(
                col,
                fmt::format("'{}' is not a {} number{}", printable(t),
                            base == 16 ? "hexadecimal" : "decimal",
                            ec == std::errc::result_out_of_range ? " of at most 64 bits" : "")));
        return v;
    }

    std::string_view name_;
    size_t line_;
    std::vector<std::string_view> fields_;
    const std::string_view* names_;
};

Result<std::optional<unsigned>> vcpu_of(const LineParser& p, size_t col) {
    POTEMKIN_TRY_ASSIGN(auto v, p.optional_decimal(col));
    if (v && *v > std::numeric_limits<unsigned>::max())
        return fail(p.error(col, "vCPU index out of range"));
    if (!v) return std::optional<unsigned>{};
    return std::optional<unsigned>{static_cast<unsigned>(*v)};
}

std::string text_or_empty(std::string_view t) {
    return t == "-" ? std::string() : std::string(t);
}

// v2: time_ns dur_ns vcpu kind op device address size value region detail
Result<TraceRecord> parse_v2(std::string_view name, size_t line_no, std::string_view line) {
    auto fields = split_tabs(line);
    if (fields.size() != kV2Columns)
        return failf("{}:{}: {} tab-separated columns, a v2 record has {}", name, line_no,
                     fields.size(), kV2Columns);
    const LineParser p(name, line_no, std::move(fields), kV2Names.data());
    TraceRecord r;
    r.line = line_no;
    POTEMKIN_TRY_ASSIGN(r.time_ns, p.decimal(0));
    POTEMKIN_TRY_ASSIGN(r.dur_ns, p.optional_decimal(1));
    POTEMKIN_TRY_ASSIGN(r.vcpu, vcpu_of(p, 2));
    POTEMKIN_TRY_ASSIGN(const std::string_view kind,
                        p.one_of(3, {"io", "mmio", "intx", "msi", "msix", "dma", "link", "note"}));
    r.device = text_or_empty(p.at(5));
    r.region = text_or_empty(p.at(9));
    r.detail = text_or_empty(p.at(10));
    POTEMKIN_TRY_ASSIGN(r.address, p.optional_hex(6));
    POTEMKIN_TRY_ASSIGN(r.size, p.optional_decimal(7));
    POTEMKIN_TRY_ASSIGN(r.value, p.optional_hex(8));
    auto require = [&](size_t col, bool present) -> Result<void> {
        if (!present)
            return fail(p.error(col, fmt::format("a {} record needs a value here, not '-'", kind)));
        return ok();
    };
    if (kind == "io" || kind == "mmio") {
        r.kind = kind == "io" ? RecordKind::io : RecordKind::mmio;
        POTEMKIN_TRY_ASSIGN(const std::string_view op, p.one_of(4, {"R", "W"}));
        r.op = std::string(op);
        POTEMKIN_TRY(require(1, r.dur_ns.has_value()));
        POTEMKIN_TRY(require(2, r.vcpu.has_value()));
        POTEMKIN_TRY(require(6, r.address.has_value()));
        POTEMKIN_TRY(require(7, r.size.has_value()));
        POTEMKIN_TRY(require(8, r.value.has_value()));
        if (*r.size == 0 || *r.size > 8) return fail(p.error(7, "an access is 1 to 8 bytes"));
    } else if (kind == "intx") {
        r.kind = RecordKind::intx;
        POTEMKIN_TRY_ASSIGN(const std::string_view op, p.one_of(4, {"assert", "deassert"}));
        r.op = std::string(op);
    } else if (kind == "msi" || kind == "msix") {
        r.kind = kind == "msi" ? RecordKind::msi : RecordKind::msix;
        POTEMKIN_TRY_ASSIGN(const std::string_view op, p.one_of(4, {"send", "drop"}));
        r.op = std::string(op);
    } else if (kind == "dma") {
        r.kind = RecordKind::dma;
        POTEMKIN_TRY_ASSIGN(const std::string_view op, p.one_of(4, {"R", "W"}));
        r.op = std::string(op);
        POTEMKIN_TRY(require(6, r.address.has_value()));
        POTEMKIN_TRY(require(7, r.size.has_value()));
    } else if (kind == "link") {
        r.kind = RecordKind::link;
        POTEMKIN_TRY_ASSIGN(const std::string_view op, p.one_of(4, {"lost", "back"}));
        r.op = std::string(op);
    } else {
        r.kind = RecordKind::note;
        POTEMKIN_TRY(p.one_of(4, {"-"}));  // a note has no op
    }
    return r;
}

// v1: time_ns vcpu space op address size value device [text]
constexpr std::array<std::string_view, 9> kV1Names = {
    "time_ns", "vcpu", "space", "op", "address", "size", "value", "device", "text"};

Result<TraceRecord> parse_v1(std::string_view name, size_t line_no, std::string_view line) {
    auto fields = split_tabs(line);
    if (fields.size() < 8 || fields.size() > 9)
        return failf("{}:{}: {} tab-separated columns, a v1 record has 8 (9 for a note)", name,
                     line_no, fields.size());
    const bool is_note = fields[2] == "note";
    if (is_note != (fields.size() == 9))
        return failf("{}:{}: {} tab-separated columns, a v1 record has 8 (9 for a note)", name,
                     line_no, fields.size());
    const LineParser p(name, line_no, std::move(fields), kV1Names.data());
    TraceRecord r;
    r.line = line_no;
    POTEMKIN_TRY_ASSIGN(r.time_ns, p.decimal(0));
    POTEMKIN_TRY_ASSIGN(r.vcpu, vcpu_of(p, 1));
    r.device = text_or_empty(p.at(7));
    if (is_note) {
        r.kind = RecordKind::note;
        r.detail = std::string(p.at(8));
        return r;
    }
    POTEMKIN_TRY_ASSIGN(const std::string_view space, p.one_of(2, {"io", "mmio", "note"}));
    r.kind = space == "io" ? RecordKind::io : RecordKind::mmio;
    POTEMKIN_TRY_ASSIGN(const std::string_view op, p.one_of(3, {"R", "W"}));
    r.op = std::string(op);
    POTEMKIN_TRY_ASSIGN(uint64_t address, p.hex(4));
    POTEMKIN_TRY_ASSIGN(uint64_t size, p.decimal(5));
    POTEMKIN_TRY_ASSIGN(uint64_t value, p.hex(6));
    if (!r.vcpu) return fail(p.error(1, "an access needs its vCPU, not '-'"));
    if (size == 0 || size > 8) return fail(p.error(5, "an access is 1 to 8 bytes"));
    r.address = address;
    r.size = size;
    r.value = value;
    return r;
}

}  // namespace

std::string_view kind_name(RecordKind k) {
    switch (k) {
        case RecordKind::io:
            return "io";
        case RecordKind::mmio:
            return "mmio";
        case RecordKind::intx:
            return "intx";
        case RecordKind::msi:
            return "msi";
        case RecordKind::msix:
            return "msix";
        case RecordKind::dma:
            return "dma";
        case RecordKind::link:
            return "link";
        case RecordKind::note:
            return "note";
    }
    return "?";
}

Result<Trace> parse_trace(std::string_view text, std::string_view name) {
    Trace t;
    size_t line_no = 0;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t end = text.find('\n', pos);
        if (end == std::string_view::npos) end = text.size();
        std::string_view line = text.substr(pos, end - pos);
        pos = end + 1;
        ++line_no;
        if (line_no == 1) {
            if (line.substr(0, kMagic.size()) != kMagic)
                return failf(
                    "{}:1: not a potemkin trace: the first line is not '# potemkin trace v2' "
                    "(docs/trace.md)",
                    name);
            const std::string_view v = line.substr(kMagic.size());
            if (v == "1") {
                t.version = 1;
            } else if (v == "2") {
                t.version = 2;
            } else {
                return failf(
                    "{}:1: trace format version '{}' is not one this potemkin reads (v1, v2); "
                    "a newer potemkin wrote it?",
                    name, LineParser::printable(v));
            }
            continue;
        }
        if (line.empty() || line[0] == '#') continue;  // comments (the column header) and blanks
        if (line.find('\0') != std::string_view::npos)
            return failf("{}:{}: a NUL byte: not a text trace", name, line_no);
        auto r = t.version == 2 ? parse_v2(name, line_no, line) : parse_v1(name, line_no, line);
        if (!r) return fail(r.error());
        t.records.push_back(std::move(*r));
    }
    if (t.version == 0) return failf("{}: empty file, not a potemkin trace", name);
    return t;
}

Result<Trace> load_trace(const std::string& path) {
    POTEMKIN_TRY_ASSIGN(auto bytes,
                        read_regular_file(path, {.max_bytes = kMaxTraceBytes, .what = "trace"}));
    const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    return parse_trace(text, path);
}

}  // namespace potemkin::tools

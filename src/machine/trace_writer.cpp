#include "machine/trace_writer.hpp"

#include <fmt/compile.h>

#include <cerrno>
#include <cstring>

#include "common/log.hpp"

namespace potemkin::machine {

namespace {

constexpr std::string_view kHeader =
    "# potemkin trace v2\n"
    "# time_ns\tdur_ns\tvcpu\tkind\top\tdevice\taddress\tsize\tvalue\tregion\tdetail\n";

// Free text goes last on a line: no tab or line break may split it.
constexpr size_t kFileBuffer = 1 << 20;

std::string one_field(std::string_view text) {
    if (text.empty()) return "-";
    std::string s(text);
    for (char& c : s)
        if (c == '\t' || c == '\n' || c == '\r') c = ' ';
    return s;
}

std::string_view or_dash(std::string_view s) {
    return s.empty() ? std::string_view("-") : s;
}

}  // namespace

Result<std::unique_ptr<TraceWriter>> TraceWriter::open(const std::string& path,
                                                       std::function<unsigned()> current_vcpu,
                                                       vm::InterruptSink& interrupts) {
    std::FILE* f = std::fopen(path.c_str(), "w");
    if (!f) return failf(Errno{errno}, "--trace {}", path);
    // A large buffer: a busy guest makes millions of records, and each write(2) of a small
    // stdio buffer costs more than formatting the records in it.
    if (std::setvbuf(f, nullptr, _IOFBF, kFileBuffer) != 0) {
        const int e = errno;
        std::fclose(f);
        return failf(Errno{e}, "--trace {}: setvbuf", path);
    }
    std::unique_ptr<TraceWriter> w(new TraceWriter(f, path, std::move(current_vcpu), interrupts));
    w->put(kHeader);
    if (w->failed_) return failf(Errno{w->errno_}, "--trace {}: write", path);
    return w;
}

TraceWriter::~TraceWriter() {
    // Buffered lines reach the file here; nobody is left to take an error, so it is logged.
    if (std::fclose(file_) != 0 && !failed_) {
        failed_ = true;
        errno_ = errno;
    }
    if (failed_)
        log::error("--trace {}: the trace is incomplete: {}", path_, std::strerror(errno_));
}

uint64_t TraceWriter::ns_since_open(vm::Clock::time_point t) const {
    if (t < start_) return 0;
    return static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(t - start_).count());
}

void TraceWriter::put(std::string_view line) {
    if (failed_) return;  // one failure is reported (at close); the rest would only repeat it
    if (std::fwrite(line.data(), 1, line.size(), file_) != line.size()) {
        failed_ = true;
        errno_ = errno;
        log::error("--trace {}: write failed, no further records are traced: {}", path_,
                   std::strerror(errno_));
    }
}

void TraceWriter::access(const vm::BusAccess& a) {
    // Formatted on the stack (no allocation) by formats compiled at build time, straight into
    // the buffer: this runs inside the engine's I/O hook, once per guest access.
    fmt::memory_buffer line;
    const auto out = fmt::appender(line);
    fmt::format_to(out, FMT_COMPILE("{}\t{}\t{}\t{}\t{}\t{}\t{:#x}\t{}\t{:#x}\t"),
                   ns_since_open(a.start), a.duration.count(), vcpu_(),
                   a.space == vm::Space::io ? "io" : "mmio", a.is_write ? 'W' : 'R',
                   or_dash(a.owner), a.address, a.size, a.value);
    if (a.range_length == 0)
        fmt::format_to(out, FMT_COMPILE("-\t-\n"));
    else
        fmt::format_to(out, FMT_COMPILE("{:#x}+{:#x}\t-\n"), a.range_base, a.range_length);
    put({line.data(), line.size()});
}

void TraceWriter::note(std::string_view device, std::string_view text) {
    put(fmt::format("{}\t-\t{}\tnote\t-\t{}\t-\t-\t-\t-\t{}\n", now_ns(), vcpu_(), or_dash(device),
                    one_field(text)));
}

void TraceWriter::interrupt_begin(std::string_view device, vm::TracedInterrupt what) {
    if (pending_) write_interrupt(*pending_);  // a front-end that raised another one meanwhile
    pending_ = Pending{std::string(device), what, now_ns()};
}

void TraceWriter::interrupt_end() {
    if (!pending_) return;
    write_interrupt(*pending_);
    pending_.reset();
}

void TraceWriter::write_interrupt(const Pending& p) {
    using Kind = vm::TracedInterrupt::Kind;
    if (p.what.kind == Kind::intx) {
        const std::string region = p.line ? fmt::format("line{}", *p.line) : "-";
        put(fmt::format("{}\t-\t-\tintx\t{}\t{}\t-\t-\t-\t{}\t-\n", p.time_ns,
                        p.what.level ? "assert" : "deassert", p.device, region));
        return;
    }
    const char* kind = p.what.kind == Kind::msix ? "msix" : "msi";
    if (p.sent)
        put(fmt::format("{}\t-\t-\t{}\tsend\t{}\t{:#x}\t4\t{:#x}\tvector{}\t-\n", p.time_ns, kind,
                        p.device, p.address, p.data, p.what.vector));
    else
        put(
            fmt::format("{}\t-\t-\t{}\tdrop\t{}\t-\t-\t-\tvector{}\tnot delivered (masked, "
                        "disabled or bus mastering off)\n",
                        p.time_ns, kind, p.device, p.what.vector));
}

void TraceWriter::dma(std::string_view device, bool to_guest, uint64_t guest_address,
                      uint64_t length, std::string_view refused) {
    put(fmt::format(
        "{}\t-\t-\tdma\t{}\t{}\t{:#x}\t{}\t-\t-\t{}\n", now_ns(), to_guest ? 'W' : 'R',
        or_dash(device), guest_address, length,
        refused.empty() ? std::string("-") : one_field(fmt::format("refused: {}", refused))));
}

void TraceWriter::link(std::string_view device, bool up, std::string_view why) {
    put(fmt::format("{}\t-\t-\tlink\t{}\t{}\t-\t-\t-\t-\t{}\n", now_ns(), up ? "back" : "lost",
                    or_dash(device), one_field(why)));
}

void TraceWriter::Sink::set_irq(unsigned line, bool level) {
    if (w_.pending_) w_.pending_->line = line;
    real_.set_irq(line, level);
}

void TraceWriter::Sink::send_msi(uint64_t address, uint32_t data) {
    if (w_.pending_) {
        w_.pending_->sent = true;
        w_.pending_->address = address;
        w_.pending_->data = data;
    }
    real_.send_msi(address, data);
}

}  // namespace potemkin::machine

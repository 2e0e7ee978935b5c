#include "machine/trace_writer.hpp"

#include <cerrno>
#include <cstring>
#include <iterator>

#include "common/log.hpp"

namespace potemkin::machine {

Result<std::unique_ptr<TraceWriter>> TraceWriter::open(const std::string& path,
                                                       std::function<unsigned()> current_vcpu) {
    std::FILE* f = std::fopen(path.c_str(), "w");
    if (!f) return failf(Errno{errno}, "--trace {}", path);
    std::unique_ptr<TraceWriter> w(new TraceWriter(f, path, std::move(current_vcpu)));
    w->put("# potemkin trace v1\n# time_ns\tvcpu\tspace\top\taddress\tsize\tvalue\tdevice\n");
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

uint64_t TraceWriter::now_ns() const {
    return static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(vm::Clock::now() - start_).count());
}

void TraceWriter::put(std::string_view line) {
    if (failed_) return;  // one failure is reported (at close); the rest would only repeat it
    if (std::fwrite(line.data(), 1, line.size(), file_) != line.size()) {
        failed_ = true;
        errno_ = errno;
        log::error("--trace {}: write failed, no further accesses are traced: {}", path_,
                   std::strerror(errno_));
    }
}

void TraceWriter::access(const vm::BusAccess& a) {
    // Formatted on the stack (no allocation), written without fmt's exceptions: this runs
    // inside the engine's I/O hook.
    fmt::memory_buffer line;
    fmt::format_to(std::back_inserter(line), "{}\t{}\t{}\t{}\t{:#x}\t{}\t{:#x}\t{}\n", now_ns(),
                   vcpu_(), a.space == vm::Space::io ? "io" : "mmio", a.is_write ? 'W' : 'R',
                   a.address, a.size, a.value, a.owner.empty() ? "-" : a.owner);
    put({line.data(), line.size()});
}

void TraceWriter::note(std::string_view device, std::string_view text) {
    put(fmt::format("{}\t{}\tnote\t-\t-\t-\t-\t{}\t{}\n", now_ns(), vcpu_(), device, text));
}

}  // namespace potemkin::machine

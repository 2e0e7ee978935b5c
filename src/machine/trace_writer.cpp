#include "machine/trace_writer.hpp"

#include <cerrno>
#include <cstring>

namespace potemkin::machine {

Result<std::unique_ptr<TraceWriter>> TraceWriter::open(const std::string& path,
                                                       std::function<unsigned()> current_vcpu) {
    std::FILE* f = std::fopen(path.c_str(), "w");
    if (!f) return fail(fmt::format("--trace {}: {}", path, std::strerror(errno)), errno);
    std::fputs("# potemkin trace v1\n# time_ns\tvcpu\tspace\top\taddress\tsize\tvalue\tdevice\n",
               f);
    return std::unique_ptr<TraceWriter>(new TraceWriter(f, std::move(current_vcpu)));
}

TraceWriter::~TraceWriter() {
    std::fclose(file_);
}

uint64_t TraceWriter::now_ns() const {
    return static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(vm::Clock::now() - start_).count());
}

void TraceWriter::access(const vm::BusAccess& a) {
    fmt::print(file_, "{}\t{}\t{}\t{}\t{:#x}\t{}\t{:#x}\t{}\n", now_ns(), vcpu_(),
               a.space == vm::Space::io ? "io" : "mmio", a.is_write ? 'W' : 'R', a.address, a.size,
               a.value, a.owner.empty() ? "-" : a.owner);
}

void TraceWriter::note(std::string_view device, std::string_view text) {
    fmt::print(file_, "{}\t{}\tnote\t-\t-\t-\t-\t{}\t{}\n", now_ns(), vcpu_(), device, text);
}

}  // namespace potemkin::machine

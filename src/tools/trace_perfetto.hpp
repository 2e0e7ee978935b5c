// `potemkin trace FILE --perfetto OUT.json`: the trace in the Chrome Trace Event Format, which
// Perfetto (ui.perfetto.dev, offline too) and chrome://tracing open (docs/trace.md,
// "Timeline"). Process "devices" has one track per device, process "vCPUs" one per vCPU;
// accesses are complete ("X") slices on both, interrupts, DMA and notes instant ("i") events on
// the device's track, link losses and returns global instant events; an interrupt or DMA that
// happened during an access to its device is linked to it by a flow ("s" -> "f").
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "tools/trace_file.hpp"

namespace potemkin::tools {

// Receives the output text piece by piece.
using TextSink = std::function<void(std::string_view)>;

// Writes the JSON object {"displayTimeUnit": "ns", "otherData": {...}, "traceEvents": [...]}
// to `out`, one event at a time (a trace of millions of accesses is never one JSON tree in
// memory). `source_name` names the trace in otherData.
void write_perfetto(const Trace& trace, const std::string& source_name, const TextSink& out);

}  // namespace potemkin::tools

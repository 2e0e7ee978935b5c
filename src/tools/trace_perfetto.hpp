// `potemkin trace FILE --perfetto OUT.json`: the trace in the Chrome Trace Event Format, which
// Perfetto (ui.perfetto.dev, offline too) and chrome://tracing open (docs/trace.md,
// "Timeline"). Process "devices" has one track per device, process "vCPUs" one per vCPU;
// accesses are complete ("X") slices on both, interrupts, DMA and notes instant ("i") events on
// the device's track, link losses and returns global instant events; an interrupt or DMA that
// happened during an access to its device is linked to it by a flow ("s" -> "f").
#pragma once

#include <nlohmann/json.hpp>

#include "tools/trace_file.hpp"

namespace potemkin::tools {

// The JSON object {"traceEvents": [...], "displayTimeUnit": "ns", "otherData": {...}}.
nlohmann::json perfetto_json(const Trace& trace, const std::string& source_name);

}  // namespace potemkin::tools

// `potemkin trace FILE [--summary] [--perfetto OUT.json] [--svg OUT.svg]`: turn a --trace
// file into a table, a timeline or a picture (docs/trace.md).
#pragma once

namespace CLI {
class App;
}

namespace potemkin::tools {

// Adds the `trace` subcommand to `app`; its callback exits the process with its status
// (0 done, 1 the trace or an output file could not be read or written, 2 usage).
void add_trace_command(CLI::App& app);

}  // namespace potemkin::tools

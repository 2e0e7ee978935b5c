// A hostile VM configuration file: any bytes, parsed as the Palacios-style XML `potemkin run`
// reads. Every input is either a configuration or an error naming the line; nothing crashes.
#include <string>

#include "vm/config.hpp"

using namespace potemkin;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    auto doc = vm::ConfigDocument::load_string(
        std::string(reinterpret_cast<const char*>(data), size), "fuzz.xml");
    if (!doc) return 0;
    auto cfg = vm::parse_vm_config(*doc);
    if (!cfg && cfg.error().message.find("fuzz.xml") == std::string::npos)
        __builtin_trap();  // an error that does not name the file
    return 0;
}

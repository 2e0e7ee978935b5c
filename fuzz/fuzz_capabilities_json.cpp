// The capabilities JSON of a vfio-user VERSION message, as either peer receives it: any bytes
// parse to capabilities or to an error, and what parses re-encodes to JSON that parses to the
// same values.
#include <string_view>

#include "vfio_user/protocol.hpp"

using namespace potemkin;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    auto caps = vfio_user::parse_capabilities_json(
        std::string_view(reinterpret_cast<const char*>(data), size));
    if (!caps) return 0;
    auto again = vfio_user::parse_capabilities_json(vfio_user::capabilities_json(*caps));
    if (!again) __builtin_trap();
    if (again->max_msg_fds != caps->max_msg_fds ||
        again->max_data_xfer_size != caps->max_data_xfer_size ||
        again->max_dma_maps != caps->max_dma_maps)
        __builtin_trap();
    return 0;
}

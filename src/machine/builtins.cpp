#include "machine/builtins.hpp"

#include <mutex>

#include "common/log.hpp"
#include "hostdev/host_device.hpp"
#include "hostdev/mpqemu_client.hpp"
#include "hostdev/vfio_user_client.hpp"
#include "models/builtin.hpp"
#include "sdk/inproc.hpp"

namespace potemkin::machine {

void register_builtins() {
    static std::once_flag once;
    std::call_once(once, [] {
        if (auto r = models::register_builtin_models(sdk::ModelRegistry::builtin()); !r)
            log::error("registering built-in models: {}", r.error().message);
        if (auto r = sdk::register_inproc_transport(hostdev::TransportRegistry::builtin()); !r)
            log::error("registering the inproc transport: {}", r.error().message);
        if (auto r = hostdev::register_vfio_user_transport(hostdev::TransportRegistry::builtin());
            !r)
            log::error("registering the vfio-user transport: {}", r.error().message);
        if (auto r = hostdev::register_mpqemu_transports(hostdev::TransportRegistry::builtin()); !r)
            log::error("registering the mpqemu transports: {}", r.error().message);
    });
}

}  // namespace potemkin::machine

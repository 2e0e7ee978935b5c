#include "machine/builtins.hpp"

#include <mutex>

#include "common/log.hpp"
#include "hostdev/host_device.hpp"
#include "inproc/transport.hpp"
#include "models/builtin.hpp"
#include "mpqemu/client.hpp"
#include "vfio_user/client.hpp"

namespace potemkin::machine {

void register_builtins() {
    static std::once_flag once;
    std::call_once(once, [] {
        if (auto r = models::register_builtin_models(sdk::ModelRegistry::builtin()); !r)
            log::error("registering built-in models: {}", r.error().message);
        if (auto r = inproc::register_inproc_transport(hostdev::TransportRegistry::builtin()); !r)
            log::error("registering the inproc transport: {}", r.error().message);
        if (auto r = vfio_user::register_vfio_user_transport(hostdev::TransportRegistry::builtin());
            !r)
            log::error("registering the vfio-user transport: {}", r.error().message);
        if (auto r = mpqemu::register_mpqemu_transports(hostdev::TransportRegistry::builtin()); !r)
            log::error("registering the mpqemu transports: {}", r.error().message);
    });
}

}  // namespace potemkin::machine

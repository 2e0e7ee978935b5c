#include "machine/builtins.hpp"

#include "devices/builtin.hpp"
#include "hostdev/host_device.hpp"
#include "inproc/transport.hpp"
#include "models/builtin.hpp"
#include "mpqemu/client.hpp"
#include "sdk/device_model.hpp"
#include "vfio/client.hpp"
#include "vfio_user/client.hpp"
#include "vm/device.hpp"

namespace potemkin::machine {

Result<void> register_builtins(const BuiltinRegistries& r) {
    POTEMKIN_TRY(models::register_builtin_models(r.models));
    POTEMKIN_TRY(inproc::register_inproc_transport(r.transports, r.models));
    POTEMKIN_TRY(vfio_user::register_vfio_user_transport(r.transports));
    POTEMKIN_TRY(mpqemu::register_mpqemu_transports(r.transports));
    POTEMKIN_TRY(vfio::register_vfio_transport(r.transports));
    POTEMKIN_TRY(devices::register_builtin_device_classes(r.classes, &r.transports));
    return ok();
}

Result<void> register_builtins() {
    // A function-local static is initialised once, thread-safely; every later call returns the
    // stored outcome.
    static const Result<void> outcome = [] {
        auto r = register_builtins(BuiltinRegistries{sdk::ModelRegistry::builtin(),
                                                     hostdev::TransportRegistry::builtin(),
                                                     vm::DeviceClassRegistry::builtin()});
        if (!r) return Result<void>(fail(r.error().context("registering the built-in parts")));
        return r;
    }();
    return outcome;
}

}  // namespace potemkin::machine

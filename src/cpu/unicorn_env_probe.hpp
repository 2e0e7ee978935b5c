// Unicorn 2.0.1 hides two pieces of CPU state that exception delivery needs:
// - `old_exception`, QEMU's "exception in flight" marker. QEMU clears it once an exception is
//   delivered, but with a UC_HOOK_INTR hook Unicorn never runs that path, so the guest's
//   *second* #DE/#GP/#PF would be promoted to a double fault (and the third to a triple
//   fault). We clear it after every delivery.
// - `error_code`, which the architecture pushes for #GP, #PF and friends.
// Both live in the CPU state that uc_context_save() copies out. Their offsets are found once
// per process by running two tiny faulting programs in a scratch engine and comparing the
// saved contexts; if the probe finds nothing unique, the engine falls back to pushing 0 and
// leaving old_exception alone (and says so in the log).
#pragma once

#include <cstddef>
#include <optional>

namespace potemkin::cpu {

struct UnicornEnvOffsets {
    std::optional<size_t> old_exception;  // byte offset of an int within a uc_context
    std::optional<size_t> error_code;
};

// Probed on first use; thread-safe.
const UnicornEnvOffsets& unicorn_env_offsets();

}  // namespace potemkin::cpu

// eventfd helpers shared by every side that signals or watches interrupts over eventfds: the
// remote link (VMM side of vfio-user and mpqemu, kernel VFIO later) and the device servers.
#pragma once

#include <cstdint>

#include "common/result.hpp"
#include "common/unique_fd.hpp"

namespace potemkin {

// A non-blocking, close-on-exec eventfd with a zero counter.
Result<UniqueFd> make_eventfd();

// Adds one to the counter. An eventfd write fails only when the counter would overflow, and the
// interrupt is then pending already, which is all a signal means: that is not an error. Any
// other failure (a closed or wrong fd) is.
Result<void> signal_eventfd(int fd);

// Reads and resets the counter: true if it had fired. Polls first, so a quiet eventfd never
// blocks even when a peer cleared O_NONBLOCK on the shared file description (QEMU does that to
// the fds it receives). Not for two readers at once: one could empty it between poll and read.
bool consume_eventfd(int fd);

}  // namespace potemkin

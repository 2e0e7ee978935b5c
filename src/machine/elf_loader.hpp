// Loads a 32-bit x86 ELF executable into guest RAM at its physical addresses (docs/guest-abi.md).
#pragma once

#include <string>

#include "common/result.hpp"
#include "vm/guest_memory.hpp"

namespace potemkin::machine {

struct LoadedImage {
    uint32_t entry = 0;
    uint64_t lowest = 0, highest = 0;  // physical extent of the PT_LOAD segments
};

// The largest guest image read: guest RAM is at most 3 GiB, and debug sections come along.
inline constexpr uint64_t kMaxGuestImageBytes = 1ull << 30;

// Errors name the file and, where it applies, the segment. Only a regular file is read.
Result<LoadedImage> load_elf32(const std::string& path, vm::GuestMemory& memory);

}  // namespace potemkin::machine

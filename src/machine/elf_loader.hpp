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

// Errors name the file and, where it applies, the segment.
Result<LoadedImage> load_elf32(const std::string& path, vm::GuestMemory& memory);

}  // namespace potemkin::machine

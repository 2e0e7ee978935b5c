// Counting the heap allocations one thread makes, for tests that promise a path allocates
// nothing (a guest access through a client). operator new is replaced for the whole test binary
// in tests/unit/alloc_counter.cpp; it counts only on a thread inside a CountAllocations scope,
// so other threads (fake servers, poll threads) allocate freely and uncounted.
#pragma once

#include <cstddef>

namespace potemkin::testing {

inline thread_local bool t_count_allocations = false;
inline thread_local size_t t_allocations = 0;

class CountAllocations {
  public:
    CountAllocations() {
        t_allocations = 0;
        t_count_allocations = true;
    }
    ~CountAllocations() { t_count_allocations = false; }
    CountAllocations(const CountAllocations&) = delete;
    CountAllocations& operator=(const CountAllocations&) = delete;
    size_t count() const { return t_allocations; }
};

}  // namespace potemkin::testing

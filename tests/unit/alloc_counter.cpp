// The replaced operator new behind tests/support/alloc_counter.hpp: malloc, counted while the
// calling thread asked for it. The default operator delete frees what malloc gave.
#include <cstdlib>
#include <new>

#include "../support/alloc_counter.hpp"

void* operator new(std::size_t n) {
    if (potemkin::testing::t_count_allocations) ++potemkin::testing::t_allocations;
    if (void* p = std::malloc(n != 0 ? n : 1)) return p;
    throw std::bad_alloc();
}

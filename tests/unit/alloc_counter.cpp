// The replaced operator new behind tests/support/alloc_counter.hpp: malloc, counted while the
// calling thread asked for it. The matching operator deletes are replaced too, so the pair is
// malloc/free on every path (sanitizers check that new and delete match).
#include <cstdlib>
#include <new>

#include "../support/alloc_counter.hpp"

void* operator new(std::size_t n) {
    if (potemkin::testing::t_count_allocations) ++potemkin::testing::t_allocations;
    if (void* p = std::malloc(n != 0 ? n : 1)) return p;
    throw std::bad_alloc();
}

void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    if (potemkin::testing::t_count_allocations) ++potemkin::testing::t_allocations;
    return std::malloc(n != 0 ? n : 1);
}

void operator delete(void* p) noexcept {
    std::free(p);
}

void operator delete(void* p, std::size_t) noexcept {
    std::free(p);
}

void operator delete(void* p, const std::nothrow_t&) noexcept {
    std::free(p);
}

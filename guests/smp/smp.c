/* Two or more vCPUs increment one counter with LOCK INC. The VMM runs every vCPU round-robin
 * on one host thread, which is what makes LOCK atomic across vCPUs on Unicorn 2.0.1
 * (UNICORN.md gotcha 12); with one engine per host thread this count comes out short. */
#include <potemkin/runtime.h>

#define ITERATIONS 200000

static volatile uint32_t counter;
static volatile uint32_t done_mask;
static volatile uint32_t started;

static void add_many(void) {
    for (int i = 0; i < ITERATIONS; ++i) __asm__ volatile("lock incl %0" : "+m"(counter));
}

void ap_main(unsigned index) {
    __asm__ volatile("lock incl %0" : "+m"(started));
    add_many();
    __asm__ volatile("lock orl %1, %0" : "+m"(done_mask) : "r"(1u << index));
    for (;;) {
        cli();
        hlt();
    }
}

int main(void) {
    unsigned cpus = boot_info()->cpu_count;
    printf("smp: %u vCPUs, %d locked increments each\n", cpus, ITERATIONS);
    add_many();
    uint32_t want = 0;
    for (unsigned i = 1; i < cpus; ++i) want |= 1u << i;
    while ((done_mask & want) != want) cpu_relax();
    CHECK(started == cpus - 1, "%u application processors started, expected %u", (unsigned)started,
          cpus - 1);
    CHECK(counter == cpus * ITERATIONS, "counter %u, expected %u", (unsigned)counter,
          cpus * ITERATIONS);
    printf("smp: counter %u\n", (unsigned)counter);
    return checks_finish();
}

/* CPU exceptions and software interrupts through the IDT:
 *   #DE (div by zero)  fault: EIP points at the div; handler resumes at a recovery label;
 *                      done twice: the second #DE must again arrive as vector 0 (a CPU only
 *                      turns a contributory fault into #DF while delivering another one)
 *   #UD (ud2)          fault: EIP points at ud2; handler skips its 2 bytes
 *   INT3 (0xcc)        trap:  EIP points after it
 *   INT 0x80           trap:  the handler changes EAX/EBX in the frame, the caller sees it;
 *                             other registers come back unchanged
 *   #GP (bad selector) fault with an error code (selector 0x20): only with "gp" on the
 *                      command line, since the VMM cannot supply error codes yet (pushes 0).
 * Each handler records vector, error code, EIP, CS and whether IF was clear inside it.
 * A double fault (vector 8) is reported as a failure and ends the test (the #DE rounds run
 * after the others so their results are printed first).
 * Exit 0 iff every check passed. */
#include <potemkin/runtime.h>

struct seen {
    unsigned count;
    uint32_t vector, error_code, eip, cs, eflags;
    bool if_clear_inside;
};

static volatile struct seen de, ud, bp, sc, gp;
static volatile uint32_t de_fault_eip, de_resume_eip, ud_fault_eip, bp_next_eip, sc_next_eip;
static volatile uint32_t gp_fault_eip, gp_resume_eip;

static void record(volatile struct seen* s, const struct int_frame* f) {
    s->count++;
    s->vector = f->vector;
    s->error_code = f->error_code;
    s->eip = f->eip;
    s->cs = f->cs;
    s->eflags = f->eflags;
    s->if_clear_inside = !(read_eflags() & EFLAGS_IF);
}

static void on_de(struct int_frame* f) {
    record(&de, f);
    f->eip = de_resume_eip;
}

static void on_ud(struct int_frame* f) {
    record(&ud, f);
    f->eip += 2; /* ud2 is 0f 0b */
}

static void on_bp(struct int_frame* f) {
    record(&bp, f);
}

static void on_syscall(struct int_frame* f) {
    record(&sc, f);
    f->eax = f->eax * 2 + 1;
    f->ebx = ~f->ebx;
}

static void on_gp(struct int_frame* f) {
    record(&gp, f);
    f->eip = gp_resume_eip;
}

static void on_double_fault(struct int_frame* f) {
    CHECK(0, "double fault (vector 8, error code 0x%x) at EIP 0x%x", f->error_code, f->eip);
    exit(checks_finish());
}

static void check_common(const char* what, volatile struct seen* s, unsigned vector) {
    CHECK(s->count == 1, "%s: handler ran %u times, expected once", what, s->count);
    CHECK(s->vector == vector, "%s: vector %u, expected %u", what, s->vector, vector);
    CHECK(s->cs == 0x08, "%s: CS in frame 0x%x, expected 0x08", what, s->cs);
    CHECK(!(s->eflags & EFLAGS_IF), "%s: IF set in the interrupted EFLAGS 0x%x", what, s->eflags);
    CHECK(s->if_clear_inside, "%s: IF not cleared inside the handler (interrupt gate)", what);
}

static void test_de(unsigned round) {
    printf("-- #DE: divl by zero (%u)\n", round);
    de.count = 0;
    uint32_t eax;
    __asm__ volatile(
        "movl $1f, %[fault]\n\t"
        "movl $2f, %[resume]\n\t"
        "xorl %%edx, %%edx\n\t"
        "movl $100, %%eax\n\t"
        "1: divl %[zero]\n\t"
        "movl $0x12345678, %%eax\n\t" /* skipped by the handler */
        "2:\n\t"
        : [fault] "=m"(de_fault_eip), [resume] "=m"(de_resume_eip), "=&a"(eax)
        : [zero] "r"(0)
        : "edx", "memory");
    check_common("#DE", &de, VEC_DE);
    CHECK(de.eip == de_fault_eip, "#DE: EIP 0x%x, expected the div at 0x%x", de.eip, de_fault_eip);
    CHECK_EQ(de.error_code, 0, "#DE: (dummy) error code");
    CHECK(eax == 100, "#DE: execution resumed at the recovery label (eax=0x%x)", eax);
}

static void test_ud(void) {
    puts("-- #UD: ud2");
    uint32_t after = 0;
    __asm__ volatile(
        "movl $1f, %[fault]\n\t"
        "1: ud2\n\t"
        "movl $1, %[after]\n\t"
        : [fault] "=m"(ud_fault_eip), [after] "+r"(after)
        :
        : "memory");
    check_common("#UD", &ud, VEC_UD);
    CHECK(ud.eip == ud_fault_eip, "#UD: EIP 0x%x, expected the ud2 at 0x%x", ud.eip, ud_fault_eip);
    CHECK(after == 1, "#UD: the instruction after ud2 did not run");
}

static void test_int3(void) {
    puts("-- INT3 (0xcc)");
    __asm__ volatile(
        "movl $1f, %[next]\n\t"
        ".byte 0xcc\n\t"
        "1:\n\t"
        : [next] "=m"(bp_next_eip)
        :
        : "memory");
    check_common("INT3", &bp, VEC_BP);
    CHECK(bp.eip == bp_next_eip, "INT3: EIP 0x%x, expected the next instruction 0x%x", bp.eip,
          bp_next_eip);
}

static void test_int80(void) {
    puts("-- INT 0x80: handler changes EAX and EBX");
    uint32_t a = 0x1234, b = 0x55aa, c = 0x11111111, d = 0x22222222, si = 0x33333333,
             di = 0x44444444;
    __asm__ volatile(
        "movl $1f, %[next]\n\t"
        "int $0x80\n\t"
        "1:\n\t"
        : "+a"(a), "+b"(b), "+c"(c), "+d"(d), "+S"(si), "+D"(di), [next] "=m"(sc_next_eip)
        :
        : "memory");
    check_common("INT 0x80", &sc, 0x80);
    CHECK(sc.eip == sc_next_eip, "INT 0x80: EIP 0x%x, expected the next instruction 0x%x", sc.eip,
          sc_next_eip);
    CHECK_EQ(a, 0x2469, "INT 0x80: EAX changed by the handler");
    CHECK_EQ(b, ~0x55aau, "INT 0x80: EBX changed by the handler");
    CHECK_EQ(c, 0x11111111u, "INT 0x80: ECX preserved");
    CHECK_EQ(d, 0x22222222u, "INT 0x80: EDX preserved");
    CHECK_EQ(si, 0x33333333u, "INT 0x80: ESI preserved");
    CHECK_EQ(di, 0x44444444u, "INT 0x80: EDI preserved");

    /* and once more: handlers are re-entrant across calls, the stack is balanced */
    uint32_t esp_before, esp_after;
    a = 5;
    __asm__ volatile(
        "movl %%esp, %[before]\n\t"
        "int $0x80\n\t"
        "movl %%esp, %[after]\n\t"
        : "+a"(a), [before] "=&r"(esp_before), [after] "=r"(esp_after)
        :
        : "ebx", "memory");
    CHECK_EQ(a, 11, "INT 0x80 second call: EAX");
    CHECK_EQ(esp_after, esp_before, "INT 0x80: ESP balanced after iret");
    CHECK_EQ(sc.count, 2, "INT 0x80 handler ran twice");
}

static void test_gp(void) {
    puts("-- #GP: load of selector 0x20 (beyond the 3-entry GDT) into FS, error code 0x20");
    __asm__ volatile(
        "movl $1f, %[fault]\n\t"
        "movl $2f, %[resume]\n\t"
        "movl $0x20, %%eax\n\t"
        "1: movw %%ax, %%fs\n\t"
        "2:\n\t"
        "movl $0x10, %%eax\n\t"
        "movw %%ax, %%fs\n\t"
        : [fault] "=m"(gp_fault_eip), [resume] "=m"(gp_resume_eip)
        :
        : "eax", "memory");
    check_common("#GP", &gp, VEC_GP);
    CHECK(gp.eip == gp_fault_eip, "#GP: EIP 0x%x, expected the mov at 0x%x", gp.eip, gp_fault_eip);
    CHECK_EQ(gp.error_code, 0x20, "#GP: error code (selector)");
}

int main(void) {
    puts("exctest: exceptions and software interrupts");
    idt_init();
    irq_register(VEC_DE, on_de);
    irq_register(VEC_UD, on_ud);
    irq_register(VEC_BP, on_bp);
    irq_register(0x80, on_syscall);
    irq_register(VEC_GP, on_gp);
    irq_register(VEC_DF, on_double_fault);

    test_ud();
    test_int3();
    test_int80();
    test_de(1);
    test_de(2);
    if (cmdline_has("gp"))
        test_gp();
    else
        puts("-- #GP skipped (add \"gp\" to the command line to run it)");
    return checks_finish();
}

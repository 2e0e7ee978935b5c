/* One entry stub per vector (256), each 16-byte aligned, and a table of their addresses
 * (__isr_stub_table) that idt_init() turns into interrupt gates.
 *
 * Each stub makes the stack uniform: for vectors where the CPU pushes no error code it
 * pushes a dummy 0, then it pushes the vector number and jumps to the common stub, which
 * does pushal and calls __int_dispatch(struct int_frame*). Stack at the call:
 *   edi esi ebp esp ebx edx ecx eax | vector | error_code | eip cs eflags   (low -> high)
 * On return: popal, drop vector and error code, iret. */

    .text
    .balign 16
    .globl __isr_stubs
__isr_stubs:
    .set vec, 0
    .rept 256
    .balign 16
    .if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17)
    /* the CPU already pushed an error code */
    .else
    pushl $0
    .endif
    pushl $vec
    jmp __isr_common
    .set vec, vec + 1
    .endr

    .balign 16
__isr_common:
    pushal
    cld                     /* the C ABI wants DF = 0 */
    pushl %esp              /* struct int_frame* */
    call __int_dispatch
    addl $4, %esp
    popal
    addl $8, %esp           /* vector and error code */
    iret

    .section .rodata
    .balign 4
    .globl __isr_stub_table
__isr_stub_table:
    .set vec, 0
    .rept 256
    .long __isr_stubs + vec * 16
    .set vec, vec + 1
    .endr

    .section .note.GNU-stack, "", @progbits

/* Guest entry point (docs/guest-abi.md): every vCPU starts here in flat 32-bit protected
 * mode, interrupts off, with its own stack, EBX = boot-info pointer, ESI = vCPU index.
 *
 * vCPU 0: clears .bss, stores the boot-info pointer, releases the other vCPUs, calls
 * main() and writes its return value to the exit port 0xf4 (32-bit outl).
 * vCPU != 0: waits until vCPU 0 has done the above (so .bss is not cleared under its
 * feet), then calls ap_main(index); if that returns, cli; hlt forever. */

    .section .text.start, "ax", @progbits
    .globl _start
    .type _start, @function
_start:
    cld
    testl %esi, %esi
    jnz .Lap

    /* vCPU 0: zero .bss (EBX and ESI are preserved: rep stosb uses EDI/ECX/EAX) */
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb

    movl %ebx, __potemkin_boot_info
    movl $1, __potemkin_bsp_ready   /* in .data: not touched by the clearing above */

    call main

    outl %eax, $0xf4                /* exit status = main's return value */
.Lstop:
    cli
    hlt
    jmp .Lstop

.Lap:
    /* wait for vCPU 0 */
    cmpl $0, __potemkin_bsp_ready
    jne 1f
    pause
    jmp .Lap
1:
    pushl %esi
    call ap_main
    addl $4, %esp
    jmp .Lstop
    .size _start, . - _start

/* Default ap_main: park the vCPU. A guest's own ap_main overrides it. */
    .text
    .weak ap_main
    .type ap_main, @function
ap_main:
    cli
    hlt
    jmp ap_main
    .size ap_main, . - ap_main

    .data
    .balign 4
    .globl __potemkin_bsp_ready
__potemkin_bsp_ready:
    .long 0

    .bss
    .balign 4
    .globl __potemkin_boot_info
__potemkin_boot_info:
    .long 0

    .section .note.GNU-stack, "", @progbits

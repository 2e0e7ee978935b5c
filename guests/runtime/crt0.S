.section .text.start
.globl _start
_start:
  movl $0, %eax
  outl %eax, $0xf4
1: hlt
  jmp 1b

/* A tiny 64-bit guest for ember's tests: entered like a Linux vmlinux (long mode, the first
 * 1 GiB identity-mapped, RSI = zero page). The first byte of the kernel command line picks
 * what it does:
 *   'h' (default) print "ember-probe: hello" on COM1, write 123 to the boot timer, then reset
 *       through the i8042 (port 0x64, 0xFE)
 *   't' triple fault (load an empty IDT and raise an exception)
 *   'i' the same as 'h' but hang instead of resetting (for signal/timeout tests)
 *   'e' the same as 'h', then echo COM1 input back (polling) until it reads 'q', then reset
 *   'x' the same as 'h' with 200000 port writes to 0x80 (nobody's: 200000 plain vCPU exits)
 *       before the reset, for measuring the cost of an exit (tests/bench/seccomp-cost) */
    .code64
    .section .text
    .globl _start
_start:
    mov     $0x20000, %rbx          /* command line (CMDLINE_ADDR) */
    movzbl  (%rbx), %r12d
    cmp     $'t', %r12d
    je      triple

    lea     msg(%rip), %rsi
    mov     $0x3f8, %dx
1:  lodsb
    test    %al, %al
    jz      2f
    out     %al, %dx
    jmp     1b
2:
    /* Map 0xC000_0000 (outside the boot identity map) with one uncached 2 MiB page:
     * PDPT[3] -> a PD at 0x300000 whose entry 0 is the MMIO page. */
    mov     $0xc0000093, %eax       /* present, writable, PCD, 2 MiB */
    mov     %rax, 0x300000
    movq    $0x300003, 0xa018
    mov     %cr3, %rax
    mov     %rax, %cr3
    mov     $0xc0000000, %eax
    movb    $123, (%rax)

    cmp     $'i', %r12d
    je      idle
    cmp     $'x', %r12d
    je      exits
    cmp     $'e', %r12d
    jne     reset
echo:
    mov     $0x3fd, %dx             /* LSR: wait for data ready */
    in      %dx, %al
    test    $1, %al
    jz      echo
    mov     $0x3f8, %dx
    in      %dx, %al
    out     %al, %dx                /* echo it */
    cmp     $'q', %al
    jne     echo
    jmp     reset
exits:
    mov     $200000, %ecx
3:  out     %al, $0x80
    dec     %ecx
    jnz     3b
reset:
    mov     $0xfe, %al
    out     %al, $0x64
idle:
    pause
    jmp     idle

triple:
    lidt    empty_idt(%rip)
    ud2

    .section .rodata
msg:
    .asciz  "ember-probe: hello\r\n"
    .balign 8
empty_idt:
    .word   0
    .quad   0

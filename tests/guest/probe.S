/* A tiny 64-bit guest for ember's tests: entered like a Linux vmlinux (long mode, the first
 * 1 GiB identity-mapped, RSI = zero page). The first byte of the kernel command line picks
 * what it does:
 *   'h' (default) print "ember-probe: hello" on COM1, write 123 to the boot timer, then reset
 *       through the i8042 (port 0x64, 0xFE)
 *   't' triple fault (load an empty IDT and raise an exception)
 *   "k" (the whole word) reset through the i8042, then triple fault at once (Linux's reboot=k
 *       does the same a few microseconds later when the reset seems not to work): the reset
 *       must win
 *   'i' the same as 'h' but hang instead of resetting (for signal/timeout tests)
 *   'e' the same as 'h', then echo COM1 input back (polling) until it reads 'q', then reset
 *   'x' the same as 'h' with 200000 port writes to 0x80 (nobody's: 200000 plain vCPU exits)
 *       before the reset, for measuring the cost of an exit (tests/bench/seccomp-cost)
 *   "c" (the first word) the same as 'h', then a heartbeat forever: "tick N" on COM1 about every 2^27 TSC
 *       cycles, N a counter kept in guest RAM at HB_COUNTER (snapshot tests: a restored guest
 *       goes on counting from where it was, without printing hello again)
 *   "m" (the first word) the same as 'h' without the reset, then a heartbeat: "tick N"
 *       lines on COM1 without pause (N counts in guest memory, so a restored guest continues
 *       the count); a digit K read on COM1 makes it write one byte in each 4 KiB page of K MiB
 *       at 16 MiB, print "dirtied K MiB" and halt with interrupts off (for
 *       tests/bench/restore-probe); 'f' fills the 32 MiB at 64 MiB (each 4 KiB page's first
 *       quadword := its address), prints "filled 32 MiB" and ticks on; 'r' reads those 32 MiB
 *       (the first quadword of each page), prints "touched 32 MiB sum S" (S their sum) and
 *       ticks on (the workload of tests/bench/restore-lazy: RAM of at least 96 MiB)
 *   'f' the same as 'h', then floods COM1 with flood_line forever, never looking at LSR
 *       (tests/integration/test_serial_flood.py) */
    .code64
    .section .text
    .globl _start
_start:
    mov     $0x20000, %rbx          /* command line (CMDLINE_ADDR) */
    movzbl  (%rbx), %r12d
    cmp     $'t', %r12d
    je      triple
    cmp     $'k', %r12d         /* the word "k" only, as "c" below */
    jne     1f
    cmpb    $0, 1(%rbx)
    je      reset_then_triple
1:

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

    /* serial's modes */
    cmp     $'f', %r12d
    je      flood

    cmp     $'i', %r12d
    je      idle
    cmp     $'x', %r12d
    je      exits
    cmp     $'c', %r12d         /* the word "c": the default "console=..." is not it */
    jne     1f
    cmpb    $0, 1(%rbx)
    je      heartbeat
    cmpb    $' ', 1(%rbx)       /* devices' arguments follow: "c virtio_mmio.device=..." */
    je      heartbeat
1:
    cmp     $'m', %r12d         /* the word "m", as "c" */
    jne     1f
    cmpb    $0, 1(%rbx)
    je      mem_ticks
    cmpb    $' ', 1(%rbx)
    je      mem_ticks
1:
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

/* The heartbeat: r13 the TSC deadline of the next tick; the line is built backwards in a
 * buffer in RAM (no stack is set up). */
    .set    HB_COUNTER, 0x500000
    .set    HB_DIGITS_END, 0x500040
heartbeat:
    rdtsc
    shl     $32, %rdx
    or      %rdx, %rax
    mov     %rax, %r13
hb_wait:
    pause
    rdtsc
    shl     $32, %rdx
    or      %rdx, %rax
    cmp     %r13, %rax
    jb      hb_wait
    add     $(1 << 27), %rax        /* the next tick: a period from now (no catching up) */
    mov     %rax, %r13
    incq    HB_COUNTER
    mov     HB_COUNTER, %rax
    mov     $HB_DIGITS_END, %rdi
    mov     $10, %rcx
5:  xor     %edx, %edx
    div     %rcx
    add     $'0', %dl
    dec     %rdi
    mov     %dl, (%rdi)
    test    %rax, %rax
    jnz     5b
    /* "tick " before the digits, "\r\n" after: the whole line goes out with one rep outsb,
     * one vCPU exit, so a pause (a snapshot) never falls inside a line */
    sub     $5, %rdi
    movl    $0x6b636974, (%rdi)     /* "tick" */
    movb    $' ', 4(%rdi)
    movw    $0x0a0d, HB_DIGITS_END  /* "\r\n" */
    mov     %rdi, %rsi
    mov     $(HB_DIGITS_END + 2), %rcx
    sub     %rdi, %rcx
    mov     $0x3f8, %dx
    cld
    rep outsb
    jmp     hb_wait

reset_then_triple:
    mov     $0xfe, %al
    out     %al, $0x64
triple:
    lidt    empty_idt(%rip)
    ud2

/* Mode 'm' (a block of its own: the other modes do not use the stack; this one does, at
 * the boot stack the VMM set). */
    .globl  mem_ticks
mem_ticks:
    lea     tick(%rip), %rsi
    call    puts_com1
    mov     m_ticks(%rip), %rax
    call    putdec_com1
    lea     crlf_msg(%rip), %rsi
    call    puts_com1
    incq    m_ticks(%rip)
    mov     $0x3fd, %dx             /* a byte waiting on COM1? */
    in      %dx, %al
    test    $1, %al
    jz      mem_ticks
    mov     $0x3f8, %dx
    in      %dx, %al
    cmp     $'f', %al
    je      m_fill
    cmp     $'r', %al
    je      m_read
    sub     $'0', %al
    cmp     $9, %al
    ja      mem_ticks               /* not a digit: ignored */
    movzbl  %al, %ebx
    mov     %ebx, %ecx
    shl     $8, %ecx                /* K MiB = K * 256 pages */
    mov     $0x1000000, %rdi
    jecxz   2f
1:  movb    %bl, (%rdi)
    add     $4096, %rdi
    loop    1b
2:  lea     dirtied_msg(%rip), %rsi
    call    puts_com1
    mov     %rbx, %rax
    call    putdec_com1
    lea     mib_msg(%rip), %rsi
    call    puts_com1
3:  cli
    hlt
    jmp     3b

/* 'f': the first quadword of each page of 64-96 MiB := the page's address. */
m_fill:
    mov     $0x4000000, %rdi
    mov     $8192, %ecx
1:  mov     %rdi, (%rdi)
    add     $4096, %rdi
    loop    1b
    lea     filled_msg(%rip), %rsi
    call    puts_com1
    jmp     mem_ticks

/* 'r': the sum of those quadwords (every page of 64-96 MiB read once). */
m_read:
    mov     $0x4000000, %rdi
    mov     $8192, %ecx
    xor     %r8d, %r8d
1:  add     (%rdi), %r8
    add     $4096, %rdi
    loop    1b
    lea     touched_msg(%rip), %rsi
    call    puts_com1
    mov     %r8, %rax
    call    putdec_com1
    lea     crlf_msg(%rip), %rsi
    call    puts_com1
    jmp     mem_ticks

/* Writes the NUL-terminated string at RSI to COM1. */
puts_com1:
    mov     $0x3f8, %dx
1:  lodsb
    test    %al, %al
    jz      2f
    out     %al, %dx
    jmp     1b
2:  ret

/* Writes RAX in decimal to COM1. */
putdec_com1:
    lea     dec_end(%rip), %rdi
    mov     $10, %rcx
1:  xor     %edx, %edx
    div     %rcx
    add     $'0', %dl
    dec     %rdi
    mov     %dl, (%rdi)
    test    %rax, %rax
    jnz     1b
    mov     %rdi, %rsi
    jmp     puts_com1

/* 'f': a guest that writes its console as fast as it can, whoever reads it. */
flood:
    mov     $0x3f8, %dx
4:  lea     flood_line(%rip), %rsi
5:  lodsb
    test    %al, %al
    jz      4b
    out     %al, %dx
    jmp     5b

    .section .rodata
msg:
    .asciz  "ember-probe: hello\r\n"
tick:
    .asciz  "tick "
crlf_msg:
    .asciz  "\r\n"
dirtied_msg:
    .asciz  "dirtied "
mib_msg:
    .asciz  " MiB\r\n"
filled_msg:
    .asciz  "filled 32 MiB\r\n"
touched_msg:
    .asciz  "touched 32 MiB sum "
flood_line:
    .asciz  "ember-flood 0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRST\r\n"
    .balign 8
empty_idt:
    .word   0
    .quad   0

    .section .data
    .balign 8
m_ticks:
    .quad   0
dec_buf:
    .fill   20, 1, 0
dec_end:
    .byte   0

/* Legacy devices through the PIO/MMIO bus, as a vCPU would reach them: 8250 UART, i8042,
 * boot timer, and the bus itself. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <cmocka.h>

#include "../../vmm/vmm.h"

static struct bus pio;

static uint8_t inb(uint16_t port)
{
    uint8_t v = 0;
    bus_access(&pio, port, &v, 1, false);
    return v;
}

static void outb(uint16_t port, uint8_t v)
{
    bus_access(&pio, port, &v, 1, true);
}

static uint64_t efd_count(int fd)
{
    uint64_t v = 0;
    if (read(fd, &v, sizeof(v)) != sizeof(v))
        return 0;
    return v;
}

static void uart(void **state)
{
    struct serial s;
    int out[2], irq = eventfd(0, EFD_NONBLOCK), rx = eventfd(0, EFD_NONBLOCK);
    char buf[8];
    (void)state;
    assert_int_equal(pipe(out), 0);
    memset(&pio, 0, sizeof(pio));
    assert_int_equal(serial_init(&s, out[1], irq, rx), 0);
    struct bus_dev d = serial_bus_dev(&s);
    assert_int_equal(bus_add(&pio, &d), 0);

    outb(0x3f8, 'h');
    outb(0x3f8, 'i');
    assert_int_equal(serial_flush(&s, 64), 0); /* what the event loop does (console.c) */
    assert_int_equal(read(out[0], buf, sizeof(buf)), 2);
    assert_memory_equal(buf, "hi", 2);
    assert_int_equal(inb(0x3fd) & 0x60, 0x60); /* THR empty, transmitter empty */
    outb(0x3ff, 0x5a);
    assert_int_equal(inb(0x3ff), 0x5a); /* scratch */

    /* THR-empty interrupt: raised when enabled, reported once by IIR */
    outb(0x3f9, 0x02);
    assert_true(efd_count(irq) > 0);
    assert_int_equal(inb(0x3fa) & 0x0f, 0x02);
    assert_int_equal(inb(0x3fa) & 0x0f, 0x01);

    /* input: data ready, received-data interrupt, FIFO order */
    outb(0x3f9, 0x01);
    assert_int_equal(serial_input(&s, (const uint8_t *)"ok", 2), 2);
    assert_true(efd_count(irq) > 0);
    assert_int_equal(inb(0x3fd) & 1, 1);
    assert_int_equal(inb(0x3fa) & 0x0f, 0x04);
    assert_int_equal(inb(0x3f8), 'o');
    assert_int_equal(inb(0x3f8), 'k');
    assert_int_equal(inb(0x3fd) & 1, 0);

    /* a full FIFO blocks input until the guest drains it */
    uint8_t many[SERIAL_FIFO + 10];
    memset(many, 'z', sizeof(many));
    assert_int_equal(serial_input(&s, many, sizeof(many)), SERIAL_FIFO);
    assert_int_equal(serial_rx_space(&s), 0);
    for (int i = 0; i < SERIAL_FIFO; i++)
        assert_int_equal(inb(0x3f8), 'z');
    assert_int_equal(efd_count(rx), 1);

    /* divisor latch and loopback */
    outb(0x3fb, 0x83);
    outb(0x3f8, 0x01);
    assert_int_equal(inb(0x3f8), 0x01);
    outb(0x3fb, 0x03);
    outb(0x3fc, 0x10 | 0x0b); /* loop + DTR, RTS, OUT2 */
    assert_int_equal(inb(0x3fe) & 0xf0, 0xb0);
    outb(0x3f8, 'L'); /* loops back, nothing on the output */
    assert_int_equal(inb(0x3f8), 'L');
    serial_destroy(&s);
    close(out[0]), close(out[1]), close(irq), close(rx);
}

static void keyboard_controller(void **state)
{
    struct i8042 k;
    int irq = eventfd(0, EFD_NONBLOCK), reset = eventfd(0, EFD_NONBLOCK);
    (void)state;
    memset(&pio, 0, sizeof(pio));
    assert_int_equal(i8042_init(&k, irq, reset), 0);
    struct bus_dev d = i8042_bus_dev(&k);
    assert_int_equal(bus_add(&pio, &d), 0);

    assert_int_equal(inb(0x64) & 1, 0);
    outb(0x64, 0xaa); /* self-test */
    assert_int_equal(inb(0x64) & 1, 1);
    assert_int_equal(inb(0x60), 0x55);
    outb(0x64, 0x60); /* write the control byte */
    outb(0x60, 0x45);
    outb(0x64, 0x20);
    assert_int_equal(inb(0x60), 0x45);
    outb(0x60, 0xf2); /* keyboard identify */
    assert_int_equal(inb(0x60), 0xfa);
    assert_int_equal(inb(0x60), 0xab);
    assert_int_equal(inb(0x60), 0x83);
    efd_count(irq);
    assert_int_equal(i8042_ctrl_alt_del(&k), 0);
    assert_true(efd_count(irq) > 0);
    assert_int_equal(inb(0x60), 0x14);
    assert_true(efd_count(irq) > 0); /* one interrupt per byte still queued */
    assert_int_equal(inb(0x60), 0x11);
    assert_true(efd_count(irq) > 0);
    assert_int_equal(inb(0x60), 0xe0);
    assert_true(efd_count(irq) > 0);
    assert_int_equal(inb(0x60), 0x71);
    assert_int_equal(efd_count(irq), 0); /* nothing left: no interrupt */
    assert_int_equal(efd_count(reset), 0);
    outb(0x64, 0xfe); /* CPU reset */
    assert_int_equal(efd_count(reset), 1);
    for (int i = 0; i < 5; i++)
        assert_int_equal(i8042_ctrl_alt_del(&k), i < 4 ? 0 : -ENOSPC);
    i8042_destroy(&k);
    close(irq), close(reset);
}

/* The UART's state round trip: a fresh UART restored from a saved one keeps its registers and
 * the bytes left in its receive FIFO (wrapped around the ring); hostile states are refused and
 * change nothing. */
static void uart_save_restore(void **state)
{
    struct serial a, b;
    struct serial_state st, bad;
    int irq = eventfd(0, EFD_NONBLOCK), rx = eventfd(0, EFD_NONBLOCK);
    char err[128];
    uint8_t fill[SERIAL_FIFO - 2];
    (void)state;
    memset(&pio, 0, sizeof(pio));
    assert_int_equal(serial_init(&a, -1, irq, rx), 0);
    struct bus_dev d = serial_bus_dev(&a);
    assert_int_equal(bus_add(&pio, &d), 0);
    memset(fill, 'x', sizeof(fill));
    assert_int_equal(serial_input(&a, fill, sizeof(fill)), sizeof(fill));
    for (size_t i = 0; i < sizeof(fill); i++)
        inb(0x3f8);
    assert_int_equal(serial_input(&a, (const uint8_t *)"wrap", 4), 4); /* across the ring's end */
    outb(0x3f9, 0x01);
    outb(0x3ff, 0x42);
    outb(0x3fb, 0x83);
    outb(0x3f8, 0x01); /* divisor 115200 */
    outb(0x3fb, 0x03);
    serial_save(&a, &st);
    serial_destroy(&a);

    assert_int_equal(serial_init(&b, -1, irq, rx), 0);
    static const struct {
        const char *what;
        size_t off;
        uint32_t v;
        unsigned width;
    } hostile[] = {
            {"count", offsetof(struct serial_state, rx_count), SERIAL_FIFO + 1, 4},
            {"head", offsetof(struct serial_state, rx_head), SERIAL_FIFO, 4},
            {"IER", offsetof(struct serial_state, ier), 0x10, 1},
            {"MCR", offsetof(struct serial_state, mcr), 0x20, 1},
            {"THR", offsetof(struct serial_state, iir_thri), 2, 1},
    };
    for (size_t i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
        bad = st;
        memcpy((uint8_t *)&bad + hostile[i].off, &hostile[i].v, hostile[i].width);
        assert_int_equal(serial_restore(&b, &bad, err, sizeof(err)), -EINVAL);
        assert_non_null(strstr(err, hostile[i].what));
        assert_int_equal(b.st.rx_count, 0);
    }
    assert_int_equal(serial_restore(&b, &st, err, sizeof(err)), 0);
    memset(&pio, 0, sizeof(pio));
    d = serial_bus_dev(&b);
    assert_int_equal(bus_add(&pio, &d), 0);
    assert_int_equal(inb(0x3ff), 0x42);
    assert_int_equal(inb(0x3f9), 0x01);
    assert_int_equal(inb(0x3fa) & 0x0f, 0x04); /* received data pending */
    for (const char *c = "wrap"; *c; c++)
        assert_int_equal(inb(0x3f8), *c);
    assert_int_equal(inb(0x3fd) & 1, 0);
    outb(0x3fb, 0x83);
    assert_int_equal(inb(0x3f8), 0x01);
    serial_destroy(&b);
    close(irq), close(rx);
}

/* The i8042's state round trip: the output buffer and a command waiting for its data byte. */
static void i8042_save_restore(void **state)
{
    struct i8042 a, b;
    struct i8042_state st, bad;
    int irq = eventfd(0, EFD_NONBLOCK), reset = eventfd(0, EFD_NONBLOCK);
    char err[128];
    (void)state;
    memset(&pio, 0, sizeof(pio));
    assert_int_equal(i8042_init(&a, irq, reset), 0);
    struct bus_dev d = i8042_bus_dev(&a);
    assert_int_equal(bus_add(&pio, &d), 0);
    for (int i = 0; i < 3; i++) /* 12 bytes in, 8 read: the ring wraps */
        assert_int_equal(i8042_ctrl_alt_del(&a), 0);
    for (int i = 0; i < 8; i++)
        inb(0x60);
    assert_int_equal(i8042_ctrl_alt_del(&a), 0);
    outb(0x64, 0x60); /* the next data byte is the control byte */
    i8042_save(&a, &st);
    i8042_destroy(&a);

    assert_int_equal(i8042_init(&b, irq, reset), 0);
    bad = st;
    bad.count = 17;
    assert_int_equal(i8042_restore(&b, &bad, err, sizeof(err)), -EINVAL);
    bad = st;
    bad.head = 16;
    assert_int_equal(i8042_restore(&b, &bad, err, sizeof(err)), -EINVAL);
    bad = st;
    bad.status = 0x01;
    assert_int_equal(i8042_restore(&b, &bad, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "status"));
    bad = st;
    bad.cmd = 0xaa;
    assert_int_equal(i8042_restore(&b, &bad, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "command"));
    bad = st;
    bad.pad = 1;
    assert_int_equal(i8042_restore(&b, &bad, err, sizeof(err)), -EINVAL);
    assert_int_equal(b.st.count, 0);
    assert_int_equal(i8042_restore(&b, &st, err, sizeof(err)), 0);
    memset(&pio, 0, sizeof(pio));
    d = i8042_bus_dev(&b);
    assert_int_equal(bus_add(&pio, &d), 0);
    static const uint8_t want[] = {0x14, 0x11, 0xe0, 0x71, 0x14, 0x11, 0xe0, 0x71};
    for (size_t i = 0; i < sizeof(want); i++)
        assert_int_equal(inb(0x60), want[i]);
    assert_int_equal(inb(0x64) & 1, 0);
    outb(0x60, 0x47); /* the pending command takes it */
    outb(0x64, 0x20);
    assert_int_equal(inb(0x60), 0x47);
    i8042_destroy(&b);
    close(irq), close(reset);
}

static void bus_rules(void **state)
{
    struct bus_dev a = {.base = 0x100, .len = 8}, b = {.base = 0x104, .len = 8};
    struct bus_dev c = {.base = 0x108, .len = 1}, z = {.base = 0x200, .len = 0};
    uint8_t v[4] = {0};
    (void)state;
    memset(&pio, 0, sizeof(pio));
    assert_int_equal(bus_add(&pio, &a), 0);
    assert_int_equal(bus_add(&pio, &b), -EBUSY);
    assert_int_equal(bus_add(&pio, &c), 0);
    assert_int_equal(bus_add(&pio, &z), -EINVAL);
    assert_false(bus_access(&pio, 0x300, v, 4, false));
    assert_int_equal(v[0] & v[1] & v[2] & v[3], 0xff); /* unclaimed reads float high */
    assert_true(bus_access(&pio, 0x107, v, 1, false));
}

static void boot_timer(void **state)
{
    struct boot_timer bt;
    struct bus mmio;
    uint8_t magic = 123, other = 7;
    (void)state;
    memset(&mmio, 0, sizeof(mmio));
    boot_timer_start(&bt);
    struct bus_dev d = boot_timer_bus_dev(&bt);
    assert_int_equal(bus_add(&mmio, &d), 0);
    bus_access(&mmio, MMIO_HOLE_START, &other, 1, true);
    assert_false(atomic_load(&bt.fired));
    bus_access(&mmio, MMIO_HOLE_START + 1, &magic, 1, true);
    assert_false(atomic_load(&bt.fired));
    bus_access(&mmio, MMIO_HOLE_START, &magic, 1, true);
    assert_true(atomic_load(&bt.fired));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(uart),
            cmocka_unit_test(keyboard_controller),
            cmocka_unit_test(uart_save_restore),
            cmocka_unit_test(i8042_save_restore),
            cmocka_unit_test(bus_rules),
            cmocka_unit_test(boot_timer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

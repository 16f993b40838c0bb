/* The split-virtqueue walker (virtio/queue.c) against well-formed and hostile rings, over fake
 * guest memory: 64 KiB at GPA 0 and 64 KiB at 4 GiB (the far side of the MMIO hole). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "../../virtio/queue.h"

#define RAM   0x10000ULL
#define HIGH  0x100000000ULL
#define DESC  0x1000ULL
#define AVAIL 0x2000ULL
#define USED  0x3000ULL
#define BUF   0x8000ULL
#define QSIZE 8

static uint8_t low[RAM] __attribute__((aligned(4096)));
static uint8_t high[RAM] __attribute__((aligned(4096)));
static struct guest_mem mem;
static struct vq q;
static struct vq_chain chain;

static int setup(void **state)
{
    (void)state;
    memset(low, 0, sizeof(low));
    memset(high, 0, sizeof(high));
    mem = (struct guest_mem){.nregions = 2};
    mem.regions[0] = (struct gm_region){.gpa = 0, .size = RAM, .host = low};
    mem.regions[1] = (struct gm_region){.gpa = HIGH, .size = RAM, .host = high};
    vq_reset(&q);
    q.st.size = QSIZE;
    q.st.desc_gpa = DESC;
    q.st.avail_gpa = AVAIL;
    q.st.used_gpa = USED;
    q.st.ready = true;
    return 0;
}

static void set_desc(uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
    uint8_t *d = low + DESC + 16 * i;
    memcpy(d, &addr, 8);
    memcpy(d + 8, &len, 4);
    memcpy(d + 12, &flags, 2);
    memcpy(d + 14, &next, 2);
}

static void set16(uint64_t gpa, uint16_t v)
{
    memcpy(low + gpa, &v, 2);
}

static uint16_t get16(uint64_t gpa)
{
    uint16_t v;
    memcpy(&v, low + gpa, 2);
    return v;
}

/* Publishes head at avail slot idx and moves avail->idx to idx + 1. */
static void offer(uint16_t slot, uint16_t head)
{
    set16(AVAIL + 4 + 2 * (slot % QSIZE), head);
    set16(AVAIL + 2, (uint16_t)(slot + 1));
}

static void activate(bool event_idx)
{
    assert_int_equal(vq_activate(&q, &mem, event_idx), 0);
}

static void good_chain(void **state)
{
    (void)state;
    activate(false);
    set_desc(0, BUF, 16, VRING_DESC_F_NEXT, 3);
    set_desc(3, BUF + 0x100, 512, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 5);
    set_desc(5, HIGH + 0x10, 1, VRING_DESC_F_WRITE, 0);
    offer(0, 0);
    assert_int_equal(vq_pop(&q, &mem, &chain), 1);
    assert_int_equal(chain.head, 0);
    assert_int_equal(chain.niov, 3);
    assert_int_equal(chain.nout, 1);
    assert_int_equal(chain.out_len, 16);
    assert_int_equal(chain.in_len, 513);
    assert_ptr_equal(chain.iov[0].iov_base, low + BUF);
    assert_ptr_equal(chain.iov[2].iov_base, high + 0x10);
    assert_int_equal(vq_pop(&q, &mem, &chain), 0);
    vq_push(&q, 0, 513);
    assert_int_equal(get16(USED + 2), 1);
    uint32_t id, len;
    memcpy(&id, low + USED + 4, 4);
    memcpy(&len, low + USED + 8, 4);
    assert_int_equal(id, 0);
    assert_int_equal(len, 513);
    assert_true(vq_should_notify(&q));
    set16(AVAIL, 1); /* VRING_AVAIL_F_NO_INTERRUPT */
    assert_false(vq_should_notify(&q));
}

static void expect_broken(void)
{
    assert_int_equal(vq_pop(&q, &mem, &chain), -EINVAL);
    assert_true(q.st.broken);
    /* A broken queue stays broken until reset, and nothing more is consumed. */
    assert_int_equal(vq_pop(&q, &mem, &chain), -EINVAL);
}

static void descriptor_loop(void **state)
{
    (void)state;
    activate(false);
    set_desc(0, BUF, 16, VRING_DESC_F_NEXT, 1);
    set_desc(1, BUF, 16, VRING_DESC_F_NEXT, 0);
    offer(0, 0);
    expect_broken();
}

static void self_loop(void **state)
{
    (void)state;
    activate(false);
    set_desc(2, BUF, 16, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 2);
    offer(0, 2);
    expect_broken();
}

static void chain_as_long_as_queue_is_fine(void **state)
{
    (void)state;
    activate(false);
    for (uint16_t i = 0; i < QSIZE; i++)
        set_desc(i, BUF + 16 * i, 16, i + 1 < QSIZE ? VRING_DESC_F_NEXT : 0, i + 1);
    offer(0, 0);
    assert_int_equal(vq_pop(&q, &mem, &chain), 1);
    assert_int_equal(chain.niov, QSIZE);
}

static void next_out_of_range(void **state)
{
    (void)state;
    activate(false);
    set_desc(0, BUF, 16, VRING_DESC_F_NEXT, QSIZE);
    offer(0, 0);
    expect_broken();
}

static void head_out_of_range(void **state)
{
    (void)state;
    activate(false);
    offer(0, 0xffff);
    expect_broken();
}

static void address_outside_ram(void **state)
{
    (void)state;
    activate(false);
    set_desc(0, RAM, 1, 0, 0);
    offer(0, 0);
    expect_broken();
}

static void address_in_mmio_hole(void **state)
{
    (void)state;
    activate(false);
    set_desc(0, MMIO_HOLE_START + 0x1000, 4, VRING_DESC_F_WRITE, 0);
    offer(0, 0);
    expect_broken();
}

static void range_across_region_end(void **state)
{
    (void)state;
    activate(false);
    set_desc(0, RAM - 8, 16, 0, 0);
    offer(0, 0);
    expect_broken();
}

static void address_wraps(void **state)
{
    (void)state;
    activate(false);
    set_desc(0, UINT64_MAX - 4, 16, 0, 0);
    offer(0, 0);
    expect_broken();
}

static void length_overflow(void **state)
{
    (void)state;
    activate(false);
    set_desc(0, 0, 0xffffffffu, 0, 0);
    offer(0, 0);
    expect_broken();
    /* A total above 2^32 - 1 is refused before any address is looked at. */
    setup(NULL);
    activate(false);
    set_desc(0, BUF, 0x80000000u, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 1);
    set_desc(1, BUF, 0x80000000u, VRING_DESC_F_WRITE, 0);
    offer(0, 0);
    expect_broken();
}

static void zero_length_is_skipped(void **state)
{
    (void)state;
    activate(false);
    set_desc(0, 0xdead0000ULL, 0, VRING_DESC_F_NEXT, 1);
    set_desc(1, BUF, 4, VRING_DESC_F_WRITE, 0);
    offer(0, 0);
    assert_int_equal(vq_pop(&q, &mem, &chain), 1);
    assert_int_equal(chain.niov, 1);
    assert_int_equal(chain.nout, 0);
    assert_int_equal(chain.in_len, 4);
}

static void avail_index_leap(void **state)
{
    (void)state;
    activate(false);
    set_desc(0, BUF, 16, 0, 0);
    set16(AVAIL + 2, QSIZE + 1);
    expect_broken();
}

static void avail_index_wraps_fine(void **state)
{
    (void)state;
    activate(false);
    q.st.last_avail = q.st.next_used = 0xffff;
    set_desc(1, BUF, 16, 0, 0);
    offer(0xffff, 1);
    assert_int_equal(get16(AVAIL + 2), 0);
    assert_int_equal(vq_pop(&q, &mem, &chain), 1);
    assert_int_equal(chain.head, 1);
    assert_int_equal(q.st.last_avail, 0);
}

static void readable_after_writable(void **state)
{
    (void)state;
    activate(false);
    set_desc(0, BUF, 16, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 1);
    set_desc(1, BUF, 16, 0, 0);
    offer(0, 0);
    expect_broken();
}

static void indirect_refused(void **state)
{
    (void)state;
    activate(false);
    set_desc(0, BUF, 16, VRING_DESC_F_INDIRECT, 0);
    offer(0, 0);
    expect_broken();
}

static void activation_checks(void **state)
{
    (void)state;
    static const uint16_t bad_sizes[] = {0, 3, 12, 512, 0xffff};
    for (unsigned i = 0; i < sizeof(bad_sizes) / sizeof(bad_sizes[0]); i++) {
        q.st.size = bad_sizes[i];
        assert_int_equal(vq_activate(&q, &mem, false), -EINVAL);
        assert_false(q.st.active);
    }
    q.st.size = QSIZE;
    q.st.desc_gpa = DESC + 8;
    assert_int_equal(vq_activate(&q, &mem, false), -EINVAL);
    q.st.desc_gpa = DESC;
    q.st.avail_gpa = AVAIL + 1;
    assert_int_equal(vq_activate(&q, &mem, false), -EINVAL);
    q.st.avail_gpa = AVAIL;
    q.st.used_gpa = USED + 2;
    assert_int_equal(vq_activate(&q, &mem, false), -EINVAL);
    /* A used ring the device cannot write as RAM (in the MMIO hole, past RAM, straddling
     * the end of a region) is refused at activation. */
    q.st.used_gpa = MMIO_HOLE_START;
    assert_int_equal(vq_activate(&q, &mem, false), -EFAULT);
    q.st.used_gpa = RAM - 16;
    assert_int_equal(vq_activate(&q, &mem, false), -EFAULT);
    q.st.used_gpa = USED;
    q.st.desc_gpa = HIGH + RAM - 16;
    assert_int_equal(vq_activate(&q, &mem, false), -EFAULT);
    q.st.desc_gpa = HIGH;
    assert_int_equal(vq_activate(&q, &mem, false), 0);
    q.st.size = VQ_MAX_SIZE;
    assert_int_equal(vq_activate(&q, &mem, false), 0);
}

static void event_idx(void **state)
{
    (void)state;
    activate(true);
    for (uint16_t i = 0; i < 4; i++) {
        set_desc(i, BUF, 16, 0, 0);
        offer(i, i);
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(vq_pop(&q, &mem, &chain), 1);
    assert_int_equal(vq_pop(&q, &mem, &chain), 0);
    /* Going idle publishes avail_event = last_avail. */
    assert_int_equal(get16(USED + 4 + 8 * QSIZE), 4);
    /* used_event = 1: the driver wants an interrupt once entry 1 is used. */
    set16(AVAIL + 4 + 2 * QSIZE, 1);
    vq_push(&q, 0, 0);
    assert_true(vq_should_notify(&q)); /* first push always signals */
    vq_push(&q, 1, 0);
    assert_true(vq_should_notify(&q)); /* crossed used_event */
    vq_push(&q, 2, 0);
    assert_false(vq_should_notify(&q));
    set16(AVAIL + 4 + 2 * QSIZE, 3);
    vq_push(&q, 3, 0);
    assert_true(vq_should_notify(&q));
}

/* A quiet queue (interrupt moderation polls it) leaves avail_event behind, so the driver does not
 * kick for what it adds; ending quiet re-arms at the first empty pop. Without EVENT_IDX the
 * used ring's NO_NOTIFY flag says the same. */
static void quiet_queue(void **state)
{
    (void)state;
    activate(true);
    for (uint16_t i = 0; i < 3; i++)
        set_desc(i, BUF, 16, 0, 0);
    offer(0, 0);
    assert_int_equal(vq_pop(&q, &mem, &chain), 1);
    vq_set_quiet(&q, true);
    assert_int_equal(vq_pop(&q, &mem, &chain), 0);
    assert_int_equal(get16(USED + 4 + 8 * QSIZE), 0); /* not moved to 1 */
    offer(1, 1);                                      /* polled, not kicked */
    assert_int_equal(vq_pop(&q, &mem, &chain), 1);
    assert_int_equal(vq_pop(&q, &mem, &chain), 0);
    assert_int_equal(get16(USED + 4 + 8 * QSIZE), 0);
    vq_set_quiet(&q, false);
    assert_int_equal(vq_pop(&q, &mem, &chain), 0);
    assert_int_equal(get16(USED + 4 + 8 * QSIZE), 2);
    /* Without EVENT_IDX. */
    setup(NULL);
    activate(false);
    vq_set_quiet(&q, true);
    assert_int_equal(get16(USED), 1); /* VRING_USED_F_NO_NOTIFY */
    assert_int_equal(vq_pop(&q, &mem, &chain), 0);
    assert_int_equal(get16(USED), 1);
    vq_set_quiet(&q, false);
    assert_int_equal(vq_pop(&q, &mem, &chain), 0);
    assert_int_equal(get16(USED), 0);
}

static void inactive_queue_does_nothing(void **state)
{
    (void)state;
    offer(0, 0);
    assert_int_equal(vq_pop(&q, &mem, &chain), 0);
    vq_push(&q, 0, 0);
    assert_int_equal(get16(USED + 2), 0);
    assert_false(vq_should_notify(&q));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test_setup(good_chain, setup),
            cmocka_unit_test_setup(quiet_queue, setup),
            cmocka_unit_test_setup(descriptor_loop, setup),
            cmocka_unit_test_setup(self_loop, setup),
            cmocka_unit_test_setup(chain_as_long_as_queue_is_fine, setup),
            cmocka_unit_test_setup(next_out_of_range, setup),
            cmocka_unit_test_setup(head_out_of_range, setup),
            cmocka_unit_test_setup(address_outside_ram, setup),
            cmocka_unit_test_setup(address_in_mmio_hole, setup),
            cmocka_unit_test_setup(range_across_region_end, setup),
            cmocka_unit_test_setup(address_wraps, setup),
            cmocka_unit_test_setup(length_overflow, setup),
            cmocka_unit_test_setup(zero_length_is_skipped, setup),
            cmocka_unit_test_setup(avail_index_leap, setup),
            cmocka_unit_test_setup(avail_index_wraps_fine, setup),
            cmocka_unit_test_setup(readable_after_writable, setup),
            cmocka_unit_test_setup(indirect_refused, setup),
            cmocka_unit_test_setup(activation_checks, setup),
            cmocka_unit_test_setup(event_idx, setup),
            cmocka_unit_test_setup(inactive_queue_does_nothing, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

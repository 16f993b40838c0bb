/* Saving and restoring the virtio-mmio transport and its queues (virtio/mmio_state.c,
 * vq_restore in virtio/queue.c) with a fake one-queue device that answers every chain: a round
 * trip onto a fresh transport continues where the first one was, and each kind of hostile
 * state is refused with a reason, leaving the transport in the reset state. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "../../virtio/mmio.h"

#define RAM   0x10000ULL
#define DESC  0x1000ULL
#define AVAIL 0x2000ULL
#define USED  0x3000ULL
#define QSIZE 8
#define FEAT  (1ULL << VIRTIO_F_VERSION_1 | 1ULL << VIRTIO_F_RING_EVENT_IDX)

static uint8_t ram[RAM] __attribute__((aligned(4096)));
static struct guest_mem mem;
static struct vmmio_dev t;

/* The fake device: its saved state is one counter; it refuses a restored 0xdead. */
static struct fake {
    uint32_t answered;
    int save_ret;
} fake;

static uint64_t fake_features(void *dev)
{
    (void)dev;
    return FEAT | 1ULL << 5;
}

static int fake_process(void *dev, struct vmmio_dev *tr, unsigned qi)
{
    struct fake *f = dev;
    struct vq_chain c;
    int r;
    while ((r = vq_pop(vmmio_queue(tr, qi), vmmio_mem(tr), &c)) > 0) {
        vq_push(vmmio_queue(tr, qi), c.head, 0);
        f->answered++;
    }
    return r;
}

static int fake_save(const void *dev, struct vmmio_dev *tr, void *state)
{
    const struct fake *f = dev;
    (void)tr;
    if (!f->save_ret)
        memcpy(state, &f->answered, sizeof(f->answered));
    return f->save_ret;
}

static int fake_restore(void *dev, struct vmmio_dev *tr, const void *state, char *err,
                        size_t errlen)
{
    struct fake *f = dev;
    uint32_t v;
    (void)tr;
    memcpy(&v, state, sizeof(v));
    if (v == 0xdead)
        return errf(err, errlen, -EINVAL, "fake: a bad counter");
    f->answered = v;
    return 0;
}

static void fake_destroy(void *dev)
{
    (void)dev;
}

static const struct virtio_dev_ops fake_ops = {
        .name = "fake",
        .device_id = 2,
        .nqueues = 1,
        .queue_max = 64,
        .features = fake_features,
        .process_queue = fake_process,
        .state_size = sizeof(uint32_t),
        .save = fake_save,
        .restore = fake_restore,
        .destroy = fake_destroy,
};

/* What the first transport saved. */
static struct vmmio_state saved;
static struct vq_state saved_q[VIRTIO_MAX_QUEUES];
static uint32_t saved_dev;

static void wr(uint64_t off, uint32_t v)
{
    vmmio_write(&t, off, (const uint8_t *)&v, 4);
}

static uint32_t rd(uint64_t off)
{
    uint32_t v;
    vmmio_read(&t, off, (uint8_t *)&v, 4);
    return v;
}

static uint16_t ram16(uint64_t gpa)
{
    uint16_t v;
    memcpy(&v, ram + gpa, 2);
    return v;
}

/* Chain n (one 16-byte descriptor n % QSIZE) published in the avail ring. */
static void offer(uint16_t n)
{
    uint64_t addr = 0x8000 + 16 * (uint64_t)n;
    uint32_t len = 16;
    uint16_t head = n % QSIZE, idx = (uint16_t)(n + 1);
    memcpy(ram + DESC + 16 * head, &addr, 8);
    memcpy(ram + DESC + 16 * head + 8, &len, 4);
    memset(ram + DESC + 16 * head + 12, 0, 4);
    memcpy(ram + AVAIL + 4 + 2 * head, &head, 2);
    memcpy(ram + AVAIL + 2, &idx, 2);
}

static void fresh(void)
{
    memset(&fake, 0, sizeof(fake));
    assert_int_equal(vmmio_init(&t, &fake_ops, &fake, &mem, 0), 0);
}

/* A driver that set the device up, had three chains answered, selected queue 0 and left two
 * more chains in the ring; the interrupt not acknowledged yet. Saved into saved*. */
static int setup(void **state)
{
    (void)state;
    memset(ram, 0, sizeof(ram));
    mem = (struct guest_mem){.nregions = 1};
    mem.regions[0] = (struct gm_region){.gpa = 0, .size = RAM, .host = ram};
    fresh();
    static const uint32_t seq[][2] = {
            {0x70, 1},     {0x70, 3},    {0x24, 0},     {0x20, (uint32_t)FEAT},
            {0x24, 1},     {0x20, 1},    {0x70, 0xb},   {0x30, 0},
            {0x38, QSIZE}, {0x80, DESC}, {0x90, AVAIL}, {0xa0, USED},
            {0x44, 1},     {0x70, 0xf},
    };
    for (size_t i = 0; i < sizeof(seq) / sizeof(seq[0]); i++)
        wr(seq[i][0], seq[i][1]);
    assert_int_equal(rd(0x70), 0xf);
    for (uint16_t n = 0; n < 3; n++)
        offer(n);
    vmmio_notify(&t, 0);
    vmmio_signal(&t, VIRTIO_INT_USED);
    offer(3);
    offer(4);
    assert_int_equal(vmmio_save(&t, &saved, saved_q, &saved_dev), 0);
    vmmio_destroy(&t);
    fresh();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    vmmio_destroy(&t);
    return 0;
}

static void round_trip(void **state)
{
    char err[160] = "";
    (void)state;
    assert_int_equal(saved_dev, 3);
    assert_int_equal(vmmio_restore(&t, &saved, saved_q, &saved_dev, err, sizeof(err)), 0);
    /* The registers read as before, the device has its state back. */
    assert_int_equal(rd(0x70), 0xf);
    assert_int_equal(rd(0x44), 1);
    assert_int_equal(rd(0x60), VIRTIO_INT_USED);
    assert_int_equal(fake.answered, 3);
    assert_true(vmmio_running(&t));
    /* The queue continues: chains 3 and 4 are next, the used index goes on from 3. */
    assert_int_equal(ram16(USED + 2), 3);
    vmmio_notify(&t, 0);
    assert_int_equal(fake.answered, 5);
    assert_int_equal(ram16(USED + 2), 5);
    uint32_t id;
    memcpy(&id, ram + USED + 4 + 8 * 3, 4);
    assert_int_equal(id, 3);
    memcpy(&id, ram + USED + 4 + 8 * 4, 4);
    assert_int_equal(id, 4);
    /* A second save gives the same transport state as the first, indices moved on. */
    struct vmmio_state again;
    struct vq_state q[VIRTIO_MAX_QUEUES];
    uint32_t dev;
    assert_int_equal(vmmio_save(&t, &again, q, &dev), 0);
    assert_memory_equal(&again, &saved, sizeof(again));
    assert_int_equal(q[0].last_avail, 5);
    assert_int_equal(q[0].next_used, 5);
    assert_int_equal(dev, 5);
    /* A device still busy cannot be saved. */
    fake.save_ret = -EBUSY;
    assert_int_equal(vmmio_save(&t, &again, q, &dev), -EBUSY);
}

/* One kind of hostile state each: the saved state with one thing changed, and a word the
 * reason must contain. */
struct hostile {
    const char *what, *reason;
    void (*mutate)(struct vmmio_state *s, struct vq_state *q, uint32_t *dev);
};

#define H(name, body)                                                          \
    static void name(struct vmmio_state *s, struct vq_state *q, uint32_t *dev) \
    {                                                                          \
        (void)s, (void)q, (void)dev;                                           \
        body;                                                                  \
    }
H(status_skips, s->status = 0x7)
H(status_unknown_bit, s->status |= 0x20)
H(needs_reset_early,
  (s->status = 0xb | VIRTIO_STATUS_NEEDS_RESET, s->activated = 0, q[0].active = 0))
H(activated_flag, s->activated = 2)
H(activated_early, (s->status = 0xb))
H(dok_not_activated, s->activated = 0)
H(features_unoffered, s->drv_features |= 1ULL << 7)
H(features_no_v1, s->drv_features &= ~(1ULL << VIRTIO_F_VERSION_1))
H(queue_sel_range, s->queue_sel = 2)
H(feature_sel_range, s->dev_features_sel = 3)
H(int_bits, atomic_store(&s->interrupt_status, 4))
H(padding, s->pad[3] = 1)
H(queue_size_zero, q[0].size = 0)
H(queue_size_odd, q[0].size = 6)
H(queue_size_max, q[0].size = 128)
H(ring_misaligned, q[0].desc_gpa += 8)
H(ring_outside, q[0].used_gpa = RAM - 8)
H(in_flight, q[0].next_used = (uint16_t)(q[0].last_avail - QSIZE - 1))
H(queue_flag, q[0].broken = 2)
H(active_not_ready, q[0].ready = 0)
H(inactive_indices, (q[0].active = 0, s->status |= VIRTIO_STATUS_NEEDS_RESET, s->activated = 0))
H(event_idx_mismatch, q[0].event_idx = 0)
H(absent_queue, q[1].size = 8)
H(ready_inactive, (q[0] = (struct vq_state){.ready = 1, .size = 8}))
H(device_refuses, *dev = 0xdead)

static const struct hostile hostiles[] = {
#define E(name, reason_word)     \
    {                            \
#name, reason_word, name \
    }
        E(status_skips, "status"),
        E(status_unknown_bit, "status"),
        E(needs_reset_early, "NEEDS_RESET"),
        E(activated_flag, "activated"),
        E(activated_early, "activated"),
        E(dok_not_activated, "DRIVER_OK"),
        E(features_unoffered, "features"),
        E(features_no_v1, "features"),
        E(queue_sel_range, "selector"),
        E(feature_sel_range, "selector"),
        E(int_bits, "interrupt"),
        E(padding, "padding"),
        E(queue_size_zero, "size"),
        E(queue_size_odd, "power of two"),
        E(queue_size_max, "maximum"),
        E(ring_misaligned, "misaligned"),
        E(ring_outside, "outside"),
        E(in_flight, "in flight"),
        E(queue_flag, "flag"),
        E(active_not_ready, "not ready"),
        E(inactive_indices, "not active"),
        E(event_idx_mismatch, "EVENT_IDX"),
        E(absent_queue, "does not have"),
        E(ready_inactive, "ready queue"),
        E(device_refuses, "bad counter"),
#undef E
};

static void hostile_states(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(hostiles) / sizeof(hostiles[0]); i++) {
        struct vmmio_state s = saved;
        struct vq_state q[VIRTIO_MAX_QUEUES];
        uint32_t dev = saved_dev;
        char err[160] = "";
        memcpy(q, saved_q, sizeof(q));
        hostiles[i].mutate(&s, q, &dev);
        int ret = vmmio_restore(&t, &s, q, &dev, err, sizeof(err));
        if (ret != -EINVAL || !strstr(err, hostiles[i].reason))
            fail_msg("%s: restore returned %d, \"%s\"", hostiles[i].what, ret, err);
        /* Nothing of it was kept: the transport is as after a reset. */
        assert_int_equal(rd(0x70), 0);
        assert_int_equal(rd(0x60), 0);
        assert_false(t.queues[0].st.active);
        assert_null(t.queues[0].desc);
    }
    /* And the unchanged state still restores afterwards. */
    char err[160];
    assert_int_equal(vmmio_restore(&t, &saved, saved_q, &saved_dev, err, sizeof(err)), 0);
}

/* A queue's restore on its own: an inactive queue keeps what the driver wrote so far (checked
 * again at DRIVER_OK); an active one is mapped anew. */
static void queue_restore(void **state)
{
    struct vq q;
    char err[160];
    (void)state;
    struct vq_state partial = {.size = 3, .desc_gpa = 0x1234}; /* the driver is mid set-up */
    assert_int_equal(vq_restore(&q, &partial, &mem, 64, err, sizeof(err)), 0);
    assert_false(q.st.active);
    assert_null(q.desc);
    assert_int_equal(vq_restore(&q, &saved_q[0], &mem, 64, err, sizeof(err)), 0);
    assert_ptr_equal(q.desc, ram + DESC);
    assert_ptr_equal(q.used, ram + USED);
    /* A smaller queue_max than the state's size is refused. */
    assert_int_equal(vq_restore(&q, &saved_q[0], &mem, 4, err, sizeof(err)), -EINVAL);
    assert_false(q.st.active);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
            T(round_trip),
            T(hostile_states),
            T(queue_restore),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

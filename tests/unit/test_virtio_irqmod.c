/* Interrupt moderation (virtio/irqmod.c), the pure state machine with the clock passed in: no
 * hold before a turnaround is measured, the round follows the turnaround within its bounds,
 * holds that keep finding requests go on for at most IRQMOD_MAX_ROUNDS, a hold that found
 * nothing backs off 1, 2, 4, … answers up to IRQMOD_MAX_BACKOFF, a useful hold ends that. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../virtio/device.h"

#define US 1000ULL

/* Answers signalled at once before the next hold starts. */
static unsigned immediate_answers(struct irqmod *m)
{
    unsigned n = 0;
    while (!irqmod_start(m) && n < 10 * IRQMOD_MAX_BACKOFF)
        n++;
    return n;
}

/* A moderator that has seen one turnaround of t ns. */
static void measured(struct irqmod *m, uint64_t t)
{
    irqmod_reset(m);
    irqmod_signalled(m, 1000 * US);
    irqmod_arrived(m, 1000 * US + t);
}

static void no_hold_until_measured(void **state)
{
    (void)state;
    struct irqmod m;
    irqmod_reset(&m);
    assert_false(irqmod_start(&m));
    assert_int_equal(irqmod_round_ns(&m), 0);
    irqmod_arrived(&m, 5 * US); /* no interrupt went out yet: nothing measured */
    assert_false(irqmod_start(&m));
    /* An idle guest (2 s later) is not a turnaround. */
    irqmod_signalled(&m, 10 * US);
    irqmod_arrived(&m, 10 * US + 2000000 * US);
    assert_false(irqmod_start(&m));
    /* A clock that went backwards measures nothing either. */
    irqmod_signalled(&m, 50 * US);
    irqmod_arrived(&m, 40 * US);
    assert_false(irqmod_start(&m));
    irqmod_signalled(&m, 100 * US);
    irqmod_arrived(&m, 180 * US);
    assert_int_equal(irqmod_round_ns(&m), 80 * US);
    assert_true(irqmod_start(&m));
}

static void round_follows_turnaround_within_bounds(void **state)
{
    (void)state;
    struct irqmod m;
    measured(&m, 1 * US);
    assert_int_equal(irqmod_round_ns(&m), IRQMOD_MIN_ROUND_NS);
    measured(&m, 1500 * US);
    assert_int_equal(irqmod_round_ns(&m), IRQMOD_MAX_ROUND_NS);
    /* A moving average: one sample moves it by an eighth of the difference. */
    measured(&m, 80 * US);
    irqmod_signalled(&m, 5000 * US);
    irqmod_arrived(&m, 5000 * US + 160 * US);
    assert_int_equal(irqmod_round_ns(&m), 90 * US);
    /* Only the first request after an interrupt measures; requests during a hold do not. */
    irqmod_arrived(&m, 9000 * US);
    assert_int_equal(irqmod_round_ns(&m), 90 * US);
    irqmod_signalled(&m, 10000 * US);
    assert_true(irqmod_start(&m));
    irqmod_arrived(&m, 10000 * US + 500 * US);
    assert_int_equal(irqmod_round_ns(&m), 90 * US);
}

static void busy_driver_is_held_for_bounded_rounds(void **state)
{
    (void)state;
    struct irqmod m;
    measured(&m, 50 * US);
    assert_true(irqmod_start(&m));
    assert_true(m.holding);
    assert_true(irqmod_start(&m)); /* answers during a hold join it */
    for (unsigned r = 1; r < IRQMOD_MAX_ROUNDS; r++)
        assert_true(irqmod_round(&m, 2));
    assert_false(irqmod_round(&m, 5)); /* the bound */
    assert_false(m.holding);
    /* It found requests: the next answer is held again at once. */
    assert_int_equal(immediate_answers(&m), 0);
    assert_false(irqmod_round(&m, 0)); /* a round that finds nothing ends the hold */
}

static void idle_driver_backs_off(void **state)
{
    (void)state;
    struct irqmod m;
    measured(&m, 50 * US);
    unsigned want = 1;
    for (int i = 0; i < 12; i++) {
        assert_true(irqmod_start(&m));
        assert_false(irqmod_round(&m, 0));
        assert_int_equal(immediate_answers(&m), want);
        if (want < IRQMOD_MAX_BACKOFF)
            want *= 2;
    }
    /* One useful hold ends the backoff. */
    assert_true(irqmod_round(&m, 1));
    assert_false(irqmod_round(&m, 0));
    assert_int_equal(immediate_answers(&m), 0);
}

static void stray_round_and_reset(void **state)
{
    (void)state;
    struct irqmod m;
    measured(&m, 50 * US);
    assert_false(irqmod_round(&m, 3)); /* a stray timer: no hold, nothing to do */
    assert_true(irqmod_start(&m));
    irqmod_reset(&m); /* device reset mid-hold: everything is measured again */
    assert_false(m.holding);
    assert_false(irqmod_start(&m));
}

/* An early end (virtio-net: the guest's rx buffers ran out) counts as a useful hold: the
 * turnaround is kept, any backoff cleared, the next answer may hold again. */
static void early_end(void **state)
{
    (void)state;
    struct irqmod m;
    measured(&m, 50 * US);
    irqmod_end(&m); /* outside a hold: nothing */
    assert_false(m.holding);
    assert_true(irqmod_start(&m));
    assert_false(irqmod_round(&m, 0)); /* found nothing: backs off */
    assert_true(m.skip > 0);
    while (!irqmod_start(&m))
        ;
    irqmod_end(&m);
    assert_false(m.holding);
    assert_int_equal(m.skip, 0);
    assert_int_equal(irqmod_round_ns(&m), 50 * US);
    assert_true(irqmod_start(&m));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(no_hold_until_measured),
            cmocka_unit_test(round_follows_turnaround_within_bounds),
            cmocka_unit_test(busy_driver_is_held_for_bounded_rounds),
            cmocka_unit_test(idle_driver_backs_off),
            cmocka_unit_test(stray_round_and_reset),
            cmocka_unit_test(early_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

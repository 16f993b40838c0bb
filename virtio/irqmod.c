/* Adaptive moderation of used-buffer interrupts. In a guest with several requests in flight,
 * the next request usually arrives while the previous answer is on its way, and every interrupt
 * costs the guest VM exits (the injection, reading the interrupt status, acknowledging it, the
 * EOI). So when a device answers requests it may hold the interrupt for a short round while it
 * polls the ring (kicks suppressed), and for more rounds as long as requests keep coming; one
 * interrupt then covers them all.
 *
 * The round lasts as long as the guest's turnaround: the time from an interrupt to the next
 * request, measured whenever interrupts go out at once (a few microseconds on bare metal, a few
 * hundred in a nested guest). A hold that found nothing (one request at a time: the driver was
 * waiting for this very answer) only added latency, so the device then answers at once for the
 * next 1, 2, 4, … IRQMOD_MAX_BACKOFF answers before it tries again; a one-deep workload pays a
 * round about once in that many requests. The logic here is pure; the device owns the timer
 * and the clock. */
#include "device.h"

void irqmod_reset(struct irqmod *m)
{
    *m = (struct irqmod){0};
}

void irqmod_signalled(struct irqmod *m, uint64_t now_ns)
{
    m->signal_ns = now_ns;
}

void irqmod_arrived(struct irqmod *m, uint64_t now_ns)
{
    uint64_t since = m->signal_ns;
    if (m->holding || !since)
        return;
    m->signal_ns = 0; /* only the first request after an interrupt measures the turnaround */
    if (now_ns < since || now_ns - since > IRQMOD_MAX_TURNAROUND_NS)
        return; /* an idle guest, not a turnaround */
    uint64_t t = now_ns - since;
    m->turnaround_ns = m->turnaround_ns ? (7 * m->turnaround_ns + t) / 8 : t;
}

uint64_t irqmod_round_ns(const struct irqmod *m)
{
    uint64_t t = m->turnaround_ns;
    if (!t)
        return 0;
    return t < IRQMOD_MIN_ROUND_NS   ? IRQMOD_MIN_ROUND_NS
           : t > IRQMOD_MAX_ROUND_NS ? IRQMOD_MAX_ROUND_NS
                                     : t;
}

bool irqmod_start(struct irqmod *m)
{
    if (m->holding)
        return true;
    if (!m->turnaround_ns)
        return false; /* nothing measured yet */
    if (m->skip) {
        m->skip--;
        return false;
    }
    m->holding = true;
    m->rounds = m->found = 0;
    return true;
}

bool irqmod_round(struct irqmod *m, unsigned found)
{
    if (!m->holding)
        return false;
    m->found += found;
    if (found && ++m->rounds < IRQMOD_MAX_ROUNDS)
        return true;
    m->holding = false;
    if (m->found) {
        m->backoff = 0;
    } else {
        m->backoff = m->backoff ? m->backoff * 2 : 1;
        if (m->backoff > IRQMOD_MAX_BACKOFF)
            m->backoff = IRQMOD_MAX_BACKOFF;
    }
    m->skip = m->backoff;
    return false;
}

void irqmod_end(struct irqmod *m)
{
    if (!m->holding)
        return;
    m->holding = false;
    m->backoff = m->skip = 0;
}

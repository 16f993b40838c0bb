/* Reading a fuzz input as a stream of little-endian fields: past its end every field is 0, so a
 * target never reads beyond the bytes libFuzzer gave. Header-only: each target includes it. */
#ifndef EMBER_FUZZ_INPUT_H
#define EMBER_FUZZ_INPUT_H

#include <stddef.h>
#include <stdint.h>

struct input {
    const uint8_t *p;
    size_t left;
};

/* in8(in), in16(in), in32(in): Returns the next field (0 once the input ran out). */
static inline uint8_t in8(struct input *in)
{
    if (!in->left)
        return 0;
    in->left--;
    return *in->p++;
}

/* One byte after the other (the operands of | are not sequenced). */
static inline uint16_t in16(struct input *in)
{
    uint16_t lo = in8(in);
    return (uint16_t)(lo | in8(in) << 8);
}

static inline uint32_t in32(struct input *in)
{
    uint32_t lo = in16(in);
    return lo | (uint32_t)in16(in) << 16;
}

#endif

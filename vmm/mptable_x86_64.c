/* Intel MultiProcessor table (spec 1.4): how a guest without ACPI finds its CPUs, the IOAPIC
 * and the ISA interrupt routing. Written at SYSMEM_START, which Linux scans (0x9fc00). */
#include <errno.h>
#include <string.h>

#include "vmm.h"

#define APIC_VERSION   0x14
#define IOAPIC_VERSION 0x11
#define CPU_STEPPING   0x600
#define CPU_FEATURES   0x201 /* FPU | APIC */

struct mpf {
    char sig[4];
    uint32_t physptr;
    uint8_t length, spec_rev, checksum, feature[5];
} __attribute__((packed));

struct mpc_table {
    char sig[4];
    uint16_t length;
    uint8_t spec_rev, checksum;
    char oem[8], product[12];
    uint32_t oemptr;
    uint16_t oemsize, count;
    uint32_t lapic;
    uint16_t ext_length;
    uint8_t ext_checksum, reserved;
} __attribute__((packed));

struct mpc_cpu {
    uint8_t type, apicid, apicver, cpuflag;
    uint32_t signature, features, reserved[2];
} __attribute__((packed));

struct mpc_bus {
    uint8_t type, busid;
    char bustype[6];
} __attribute__((packed));

struct mpc_ioapic {
    uint8_t type, apicid, apicver, flags;
    uint32_t apicaddr;
} __attribute__((packed));

struct mpc_irq { /* interrupt source (type 3) and local interrupt source (type 4) */
    uint8_t type, irqtype;
    uint16_t irqflag;
    uint8_t srcbus, srcbusirq, dstapic, dstirq;
} __attribute__((packed));

enum { MP_CPU, MP_BUS, MP_IOAPIC, MP_INTSRC, MP_LINTSRC };
enum { MP_INT, MP_NMI, MP_SMI, MP_EXTINT };

static uint8_t checksum(const void *p, size_t len)
{
    const uint8_t *b = p;
    uint8_t sum = 0;
    while (len--)
        sum += *b++;
    return (uint8_t)-sum;
}

int mptable_write(const struct guest_mem *mem, unsigned nvcpus)
{
    size_t size = sizeof(struct mpc_table) + nvcpus * sizeof(struct mpc_cpu) +
                  sizeof(struct mpc_bus) + sizeof(struct mpc_ioapic) +
                  (IOAPIC_PINS + 2) * sizeof(struct mpc_irq);
    uint64_t table_gpa = SYSMEM_START + sizeof(struct mpf);
    uint8_t ioapic_id = (uint8_t)(nvcpus + 1); /* after every CPU's APIC ID */
    uint16_t count = 0;

    if (nvcpus == 0 || nvcpus > VCPUS_MAX)
        return -EINVAL;
    struct mpf *mpf = gm_ptr(mem, SYSMEM_START, sizeof(*mpf) + size);
    if (!mpf || SYSMEM_START + sizeof(*mpf) + size > SYSMEM_END)
        return -EFAULT;
    uint8_t *base = (uint8_t *)(mpf + 1), *p = base + sizeof(struct mpc_table);
    memset(mpf, 0, sizeof(*mpf) + size);

    for (unsigned i = 0; i < nvcpus; i++, count++, p += sizeof(struct mpc_cpu)) {
        struct mpc_cpu c = {.type = MP_CPU,
                            .apicid = (uint8_t)i,
                            .apicver = APIC_VERSION,
                            .cpuflag = (uint8_t)(1 | (i == 0 ? 2 : 0)), /* enabled, BSP */
                            .signature = CPU_STEPPING,
                            .features = CPU_FEATURES};
        memcpy(p, &c, sizeof(c));
    }
    struct mpc_bus bus = {.type = MP_BUS, .busid = 0, .bustype = {'I', 'S', 'A', ' ', ' ', ' '}};
    memcpy(p, &bus, sizeof(bus));
    p += sizeof(bus), count++;
    struct mpc_ioapic io = {.type = MP_IOAPIC,
                            .apicid = ioapic_id,
                            .apicver = IOAPIC_VERSION,
                            .flags = 1,
                            .apicaddr = (uint32_t)IOAPIC_ADDR};
    memcpy(p, &io, sizeof(io));
    p += sizeof(io), count++;
    for (unsigned irq = 0; irq < IOAPIC_PINS; irq++, count++, p += sizeof(struct mpc_irq)) {
        struct mpc_irq s = {.type = MP_INTSRC,
                            .irqtype = MP_INT,
                            .srcbus = 0,
                            .srcbusirq = (uint8_t)irq,
                            .dstapic = ioapic_id,
                            .dstirq = (uint8_t)irq};
        memcpy(p, &s, sizeof(s));
    }
    struct mpc_irq lint[2] = {
            {.type = MP_LINTSRC, .irqtype = MP_EXTINT, .dstapic = 0, .dstirq = 0},
            {.type = MP_LINTSRC, .irqtype = MP_NMI, .dstapic = 0xff, .dstirq = 1},
    };
    memcpy(p, lint, sizeof(lint));
    count += 2;

    struct mpc_table t = {.sig = {'P', 'C', 'M', 'P'},
                          .length = (uint16_t)size,
                          .spec_rev = 4,
                          .oem = {'E', 'M', 'B', 'E', 'R', ' ', ' ', ' '},
                          .product = {'0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0'},
                          .count = count,
                          .lapic = (uint32_t)LAPIC_ADDR};
    memcpy(base, &t, sizeof(t));
    ((struct mpc_table *)base)->checksum = checksum(base, size);

    struct mpf f = {.sig = {'_', 'M', 'P', '_'},
                    .physptr = (uint32_t)table_gpa,
                    .length = 1,
                    .spec_rev = 4};
    f.checksum = checksum(&f, sizeof(f));
    memcpy(mpf, &f, sizeof(f));
    return 0;
}

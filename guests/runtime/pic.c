/* 8259A PIC pair and ELCR. */
#include <potemkin/io.h>
#include <potemkin/pic.h>

#define PIC1_CMD 0x20
#define PIC1_DATA 0x21
#define PIC2_CMD 0xa0
#define PIC2_DATA 0xa1
#define ELCR1 0x4d0
#define ELCR2 0x4d1

#define ICW1_ICW4 0x01
#define ICW1_INIT 0x10
#define ICW4_8086 0x01
#define OCW2_EOI 0x20
#define OCW3_READ_IRR 0x0a
#define OCW3_READ_ISR 0x0b

static unsigned master_base = PIC_DEFAULT_MASTER_BASE;
static unsigned slave_base = PIC_DEFAULT_SLAVE_BASE;

void pic_init(unsigned mbase, unsigned sbase) {
    master_base = mbase & 0xf8;
    slave_base = sbase & 0xf8;
    outb(PIC1_CMD, ICW1_INIT | ICW1_ICW4); /* ICW1: edge, cascade, ICW4 follows */
    outb(PIC2_CMD, ICW1_INIT | ICW1_ICW4);
    outb(PIC1_DATA, (uint8_t)master_base); /* ICW2: vector base */
    outb(PIC2_DATA, (uint8_t)slave_base);
    outb(PIC1_DATA, 1 << 2); /* ICW3: slave on line 2 */
    outb(PIC2_DATA, 2);      /* ICW3: slave identity 2 */
    outb(PIC1_DATA, ICW4_8086);
    outb(PIC2_DATA, ICW4_8086);
    outb(PIC1_DATA, 0xff); /* OCW1: all masked */
    outb(PIC2_DATA, 0xff);
}

unsigned pic_vector(unsigned line) {
    return line < 8 ? master_base + line : slave_base + (line - 8);
}

void pic_unmask(unsigned line) {
    if (line < 8) {
        outb(PIC1_DATA, inb(PIC1_DATA) & (uint8_t) ~(1u << line));
    } else {
        outb(PIC2_DATA, inb(PIC2_DATA) & (uint8_t) ~(1u << (line - 8)));
        outb(PIC1_DATA, inb(PIC1_DATA) & (uint8_t) ~(1u << 2));
    }
}

void pic_mask(unsigned line) {
    if (line < 8)
        outb(PIC1_DATA, inb(PIC1_DATA) | (uint8_t)(1u << line));
    else
        outb(PIC2_DATA, inb(PIC2_DATA) | (uint8_t)(1u << (line - 8)));
}

void pic_eoi(unsigned line) {
    if (line >= 8) outb(PIC2_CMD, OCW2_EOI);
    outb(PIC1_CMD, OCW2_EOI);
}

void pic_set_level(unsigned line, bool level) {
    uint16_t port = line < 8 ? ELCR1 : ELCR2;
    uint8_t bit = (uint8_t)(1u << (line & 7));
    uint8_t v = inb(port);
    outb(port, level ? (uint8_t)(v | bit) : (uint8_t)(v & ~bit));
}

static unsigned read_reg(uint8_t ocw3) {
    outb(PIC1_CMD, ocw3);
    outb(PIC2_CMD, ocw3);
    return ((unsigned)inb(PIC2_CMD) << 8) | inb(PIC1_CMD);
}

unsigned pic_read_irr(void) {
    return read_reg(OCW3_READ_IRR);
}
unsigned pic_read_isr(void) {
    return read_reg(OCW3_READ_ISR);
}

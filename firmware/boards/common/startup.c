/*
 * Reset, vector table and fault reporting for every board, in C.
 *
 * The linker script provides the symbols below; MFN_BOARD_IRQ_COUNT (from board.mk)
 * sizes the table. Every external interrupt enters irq_entry(), which hands the NVIC
 * number to board_irq(): one small dispatcher instead of a hundred weak handlers.
 */
#include <stdint.h>
#include <string.h>

#include "board.h"
#include "cortex_m.h"

#ifndef MFN_BOARD_IRQ_COUNT
#error "MFN_BOARD_IRQ_COUNT must come from the board's board.mk"
#endif

extern uint32_t __data_load[], __data_start[], __data_end[];
extern uint32_t __bss_start[], __bss_end[];
extern uint32_t __arena_start[], __arena_end[];
extern uint32_t __stack_bottom[], __stack_top[];

int main(void);
void Reset_Handler(void);
void SysTick_Handler(void);

static void write_hex(const char *label, uint32_t value)
{
    char text[20] = " ";
    size_t at = strlen(label) + 1;
    memcpy(text + 1, label, at - 1);
    text[at++] = '=';
    for (int shift = 28; shift >= 0; shift -= 4) {
        text[at++] = "0123456789abcdef"[(value >> shift) & 0xFu];
    }
    text[at] = '\0';
    board_panic_write(text);
}

/*
 * Called with the stacked exception frame (r0-r3, r12, lr, pc, xpsr). Prints one
 * line and sleeps forever: the host sees why the board went silent, and QEMU does
 * not spin a host core.
 */
void fault_report(const uint32_t *frame, uint32_t exc_return)
{
    uint32_t ipsr;
    __asm__ volatile("mrs %0, ipsr" : "=r"(ipsr));
    static const char *const names[] = {"?", "reset", "nmi", "hardfault", "memmanage", "busfault",
                                        "usagefault", "securefault"};
    board_panic_write("\r\nmfn FAULT ");
    board_panic_write(ipsr < 8 ? names[ipsr] : "exception");
    write_hex("exc", ipsr);
    /* A fault during stacking can leave the frame unusable: print it only if it points to RAM. */
    if (((uintptr_t)frame & 3u) == 0 && (uintptr_t)frame >= 0x20000000u && (uintptr_t)frame < 0x40000000u) {
        write_hex("pc", frame[6]);
        write_hex("lr", frame[5]);
    }
    write_hex("excret", exc_return);
    write_hex("cfsr", SCB_CFSR);
    write_hex("hfsr", SCB_HFSR);
    write_hex("mmfar", SCB_MMFAR);
    write_hex("bfar", SCB_BFAR);
    board_panic_write("\r\n");
    for (;;) {
        wait_for_interrupt();
    }
}

/* Finds the stack the exception frame went to (EXC_RETURN bit 2: MSP or PSP). */
__attribute__((naked)) static void fault_entry(void)
{
    __asm__ volatile(
        "tst lr, #4\n\t"
        "ite eq\n\t"
        "mrseq r0, msp\n\t"
        "mrsne r0, psp\n\t"
        "mov r1, lr\n\t"
        "b fault_report\n\t");
}

static void irq_entry(void)
{
    uint32_t ipsr;
    __asm__ volatile("mrs %0, ipsr" : "=r"(ipsr));
    board_irq(ipsr - 16u);
}

typedef void (*vector_t)(void);

__attribute__((used, section(".vectors"))) const vector_t mfn_vector_table[16 + MFN_BOARD_IRQ_COUNT] = {
    [0] = (vector_t)(uintptr_t)__stack_top,
    [1] = Reset_Handler,
    [2] = fault_entry,  /* NMI */
    [3] = fault_entry,  /* HardFault */
    [4] = fault_entry,  /* MemManage */
    [5] = fault_entry,  /* BusFault */
    [6] = fault_entry,  /* UsageFault */
    [7] = fault_entry,  /* SecureFault (Armv8-M) */
    [11] = fault_entry, /* SVCall: nothing here uses it */
    [12] = fault_entry, /* DebugMonitor */
    [14] = fault_entry, /* PendSV */
    [15] = SysTick_Handler,
    [16 ... 16 + MFN_BOARD_IRQ_COUNT - 1] = irq_entry,
};

__attribute__((noreturn)) void Reset_Handler(void)
{
    /* FPU (and MVE) first: -O3 code, even memcpy/memset below, may use their registers. */
    SCB_CPACR |= SCB_CPACR_FPU_FULL_ACCESS;
    barrier_dsb_isb();
#if defined(__ARM_ARCH_8M_MAIN__) || defined(__ARM_ARCH_8_1M_MAIN__)
    /* Armv8-M checks the stack limit in hardware: an overflow becomes a UsageFault, not corruption. */
    __asm__ volatile("msr msplim, %0" ::"r"(__stack_bottom));
#endif
    SCB_VTOR = (uint32_t)(uintptr_t)mfn_vector_table;
    SCB_SHCSR |= SCB_SHCSR_FAULT_ENABLES;

    memcpy(__data_start, __data_load, (size_t)((char *)__data_end - (char *)__data_start));
    memset(__bss_start, 0, (size_t)((char *)__bss_end - (char *)__bss_start));
    /* C says statics start at zero; the arena is a static array too. */
    memset(__arena_start, 0, (size_t)((char *)__arena_end - (char *)__arena_start));

    (void)main();
    board_panic_write("\r\nmfn: main returned\r\n");
    for (;;) {
        wait_for_interrupt();
    }
}

void cortex_m_enable_caches(void)
{
    /* Instruction cache: invalidate all, then enable (ARMv7-M B2.2.7). */
    barrier_dsb_isb();
    SCB_ICIALLU = 0;
    barrier_dsb_isb();
    SCB_CCR |= SCB_CCR_IC;
    barrier_dsb_isb();

    /* Data cache: its contents are undefined at reset, so invalidate every set and way first. */
    SCB_CSSELR = 0; /* level 1, data */
    barrier_dsb_isb();
    const uint32_t ccsidr = SCB_CCSIDR;
    const uint32_t sets = ((ccsidr >> 13) & 0x7FFFu) + 1u;
    const uint32_t ways = ((ccsidr >> 3) & 0x3FFu) + 1u;
    const uint32_t set_shift = (ccsidr & 7u) + 4u; /* log2(line bytes) */
    const uint32_t way_shift = ways > 1u ? (uint32_t)__builtin_clz(ways - 1u) : 0u;
    for (uint32_t set = 0; set < sets; set++) {
        for (uint32_t way = 0; way < ways; way++) {
            SCB_DCISW = (set << set_shift) | (ways > 1u ? way << way_shift : 0u);
        }
    }
    barrier_dsb_isb();
    SCB_CCR |= SCB_CCR_DC;
    barrier_dsb_isb();
}

/*
 * Arm MPS2 AN500 (Cortex-M7), as emulated by QEMU's mps2-an500.
 *
 * Numbers from QEMU's hw/arm/mps2.c: SYSCLK (CPU, SysTick with CLKSOURCE=1, and the
 * APB UART clock) is 25 MHz (the 1 MHz SysTick reference clock is not used); UART0
 * raises RX on IRQ 0 and TX on IRQ 1, as on AN385.
 */
#include "board.h"
#include "cmsdk_uart.h"
#include "cortex_m.h"
#include "mfn_port.h"
#include "systick.h"

#define CPU_CLOCK_HZ 25000000u

static const cmsdk_uart_config_t uart0 = {
    .base = 0x40004000u,
    .pclk_hz = CPU_CLOCK_HZ,
    .baud = 115200u,
    .rx_irq = 0u,
    .tx_irq = 1u,
};

void mfn_port_init(void)
{
    /* Cortex-M7 caches: effective on a real AN500 image, no-ops in QEMU. */
    cortex_m_enable_caches();
    systick_start(CPU_CLOCK_HZ);
    cmsdk_uart_init(&uart0);
}

void board_irq(uint32_t irq)
{
    if (!cmsdk_uart_irq(irq)) {
        nvic_disable(irq); /* nobody asked for it: silence it rather than loop */
    }
}

/* QEMU's DWT CYCCNT reads 0: SysTick, extended to 64 bits, is the counter. */
uint64_t mfn_port_counter(void)
{
    return systick_ticks();
}

const char *mfn_port_counter_unit(void)
{
    return "systick";
}

uint32_t mfn_port_clock_hz(void)
{
    return CPU_CLOCK_HZ;
}

/*
 * Arm MPS3 AN547 (Corstone-300, Cortex-M55 + MVE), as emulated by QEMU's mps3-an547.
 *
 * Numbers from QEMU's hw/arm/mps2-tz.c (which follows Arm AN547): the CPU and SysTick
 * run at 32 MHz, the APB peripherals (the UART's baud clock) at 25 MHz. UART0 raises
 * RX on IRQ 33 and TX on IRQ 34 (NVIC numbering; measured under QEMU 7.2, as in the
 * AN547 interrupt map). The core boots in Secure state with
 * the SAU off, so every access is Secure and the non-secure-alias addresses used here
 * (ITCM 0x0, DTCM 0x20000000, ISRAM 0x21000000, QSPI 0x28000000, UART 0x49303000)
 * pass the memory and peripheral protection controllers at their reset settings.
 */
#include "board.h"
#include "cmsdk_uart.h"
#include "cortex_m.h"
#include "mfn_port.h"
#include "systick.h"

#define CPU_CLOCK_HZ 32000000u

static const cmsdk_uart_config_t uart0 = {
    .base = 0x49303000u,
    .pclk_hz = 25000000u,
    .baud = 115200u,
    .rx_irq = 33u,
    .tx_irq = 34u,
};

void mfn_port_init(void)
{
    /* Real AN547 images have 32 KiB I- and D-caches in front of QSPI and ISRAM; QEMU ignores this. */
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

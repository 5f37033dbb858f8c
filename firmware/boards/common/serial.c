/*
 * mfn_port_read / mfn_port_write for every bare-metal board, on top of the receive
 * ring and the board's UART driver (board.h).
 */
#include "serial.h"

#include "board.h"
#include "cortex_m.h"
#include "mfn_port.h"
#include "systick.h"

#if (MFN_RX_RING_BYTES & (MFN_RX_RING_BYTES - 1u)) != 0
#error "MFN_RX_RING_BYTES must be a power of two"
#endif

static uint8_t rx_ring[MFN_RX_RING_BYTES];
static volatile uint32_t rx_head; /* total bytes stored (interrupt) */
static volatile uint32_t rx_tail; /* total bytes taken (thread) */
volatile uint32_t serial_rx_dropped;

int serial_rx_put(uint8_t byte)
{
    const uint32_t head = rx_head;
    if (head - rx_tail >= MFN_RX_RING_BYTES) {
        return 0;
    }
    rx_ring[head & (MFN_RX_RING_BYTES - 1u)] = byte;
    __asm__ volatile("" ::: "memory"); /* publish only after the byte is stored */
    rx_head = head + 1u;
    return 1;
}

uint32_t serial_rx_space(void)
{
    return MFN_RX_RING_BYTES - (rx_head - rx_tail);
}

int32_t mfn_port_read(uint8_t *buf, uint32_t len, uint32_t timeout_ms)
{
    if (len == 0u) {
        return 0;
    }
    const uint64_t deadline = systick_ms() + timeout_ms;
    for (;;) {
        /*
         * Check and sleep with interrupts masked: a byte arriving between the check
         * and WFI leaves its interrupt pending, and a pending interrupt ends WFI.
         * The 1 kHz SysTick wakes us to look at the clock.
         */
        const uint32_t primask = irq_save();
        if (rx_head != rx_tail) {
            irq_restore(primask);
            break;
        }
        if (systick_ms() >= deadline) {
            irq_restore(primask);
            return 0;
        }
        wait_for_interrupt();
        irq_restore(primask);
    }

    const uint32_t head = rx_head;
    __asm__ volatile("" ::: "memory"); /* read the bytes only after their head */
    uint32_t tail = rx_tail;
    uint32_t count = 0;
    while (tail != head && count < len) {
        buf[count++] = rx_ring[tail & (MFN_RX_RING_BYTES - 1u)];
        tail++;
    }
    __asm__ volatile("" ::: "memory"); /* free the slots only after copying them */
    rx_tail = tail;
    board_uart_rx_resume();
    return (int32_t)count;
}

void mfn_port_write(const uint8_t *buf, uint32_t len)
{
    board_uart_write(buf, len);
}

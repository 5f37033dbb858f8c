/*
 * CMSDK APB UART driver: interrupt-driven receive into the serial ring, transmit that
 * sleeps while the one-byte buffer is full. Register layout from the Cortex-M System
 * Design Kit TRM (DDI 0479): DATA, STATE, CTRL, INTSTATUS/INTCLEAR, BAUDDIV.
 *
 * Flow control: when the ring is full the byte stays in the UART (its interrupt is
 * cleared) until mfn_port_read makes room and board_uart_rx_resume() takes it. QEMU's
 * model accepts no new byte from its chardev until the guest reads DATA, so the TCP
 * socket backs up and nothing is lost however slow the guest is. Real CMSDK hardware has no such back-pressure: there the next byte sets
 * the RX overrun flag and is lost (counted in serial_rx_dropped).
 */
#include "cmsdk_uart.h"

#include "board.h"
#include "cortex_m.h"
#include "serial.h"

#define UART_DATA(b) MFN_REG32((b) + 0x00u)
#define UART_STATE(b) MFN_REG32((b) + 0x04u)
#define UART_CTRL(b) MFN_REG32((b) + 0x08u)
#define UART_INT(b) MFN_REG32((b) + 0x0Cu) /* read: INTSTATUS, write 1s: INTCLEAR */
#define UART_BAUDDIV(b) MFN_REG32((b) + 0x10u)

#define STATE_TX_FULL (1u << 0)
#define STATE_RX_FULL (1u << 1)
#define STATE_TX_OVERRUN (1u << 2)
#define STATE_RX_OVERRUN (1u << 3)
#define CTRL_TX_ENABLE (1u << 0)
#define CTRL_RX_ENABLE (1u << 1)
#define CTRL_TX_INT_ENABLE (1u << 2)
#define CTRL_RX_INT_ENABLE (1u << 3)
#define INT_TX (1u << 0)
#define INT_RX (1u << 1)

static cmsdk_uart_config_t uart;
static volatile int rx_held_back; /* a byte waits in the UART for room in the ring */

void cmsdk_uart_init(const cmsdk_uart_config_t *config)
{
    uart = *config;
    UART_CTRL(uart.base) = 0;
    UART_BAUDDIV(uart.base) = uart.pclk_hz / uart.baud; /* must be >= 16 */
    UART_STATE(uart.base) = STATE_TX_OVERRUN | STATE_RX_OVERRUN;
    UART_INT(uart.base) = INT_TX | INT_RX;
    UART_CTRL(uart.base) = CTRL_TX_ENABLE | CTRL_RX_ENABLE | CTRL_RX_INT_ENABLE;
    nvic_enable(uart.rx_irq);
    nvic_enable(uart.tx_irq);
}

/* Moves received bytes into the ring; with the ring full, leaves the byte in the UART. */
static void rx_drain(uint32_t base)
{
    while (UART_STATE(base) & STATE_RX_FULL) {
        UART_INT(base) = INT_RX; /* clear first: a later byte raises it again */
        if (serial_rx_space() == 0u) {
            rx_held_back = 1;
            return;
        }
        (void)serial_rx_put((uint8_t)UART_DATA(base));
    }
}

int cmsdk_uart_irq(uint32_t irq)
{
    if (irq != uart.rx_irq && irq != uart.tx_irq) {
        return 0;
    }
    /* Serve both directions from either line: a swapped RX/TX wiring then still works. */
    const uint32_t base = uart.base;
    UART_INT(base) = INT_TX; /* the TX interrupt only wakes board_uart_write() */
    if (UART_STATE(base) & STATE_RX_OVERRUN) {
        UART_STATE(base) = STATE_RX_OVERRUN; /* real hardware only: QEMU never overruns */
        serial_rx_dropped = serial_rx_dropped + 1u;
    }
    if (rx_held_back) {
        UART_INT(base) = INT_RX; /* board_uart_rx_resume() will take the byte */
    } else {
        rx_drain(base);
    }
    return 1;
}

void board_uart_rx_resume(void)
{
    if (rx_held_back && serial_rx_space() > 0u) {
        const uint32_t primask = irq_save();
        rx_held_back = 0;
        rx_drain(uart.base);
        irq_restore(primask);
    }
}

void board_uart_write(const uint8_t *buf, uint32_t len)
{
    const uint32_t base = uart.base;
    for (uint32_t i = 0; i < len; i++) {
        while (UART_STATE(base) & STATE_TX_FULL) {
            const uint32_t primask = irq_save();
            UART_CTRL(base) |= CTRL_TX_INT_ENABLE;
            if (UART_STATE(base) & STATE_TX_FULL) {
                wait_for_interrupt(); /* the TX interrupt (or the 1 kHz tick) ends it */
            }
            UART_CTRL(base) &= ~CTRL_TX_INT_ENABLE;
            irq_restore(primask);
        }
        UART_DATA(base) = buf[i];
    }
}

void board_panic_write(const char *text)
{
    const uint32_t base = uart.base;
    if (base == 0u) {
        return; /* faulted before mfn_port_init(): nowhere to print */
    }
    for (; *text; text++) {
        while (UART_STATE(base) & STATE_TX_FULL) {
        }
        UART_DATA(base) = (uint8_t)*text;
    }
}

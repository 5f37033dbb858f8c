/*
 * The contract between the shared Cortex-M code (startup, SysTick, serial ring) and
 * one board directory. Each board provides these; the common code provides the rest
 * of mfn_port.h.
 */
#ifndef MFN_BOARD_H
#define MFN_BOARD_H

#include <stdint.h>

/* External interrupt irq (0-based, as in the NVIC) is active. */
void board_irq(uint32_t irq);

/* Polled, interrupt-free output for fault handlers (works with interrupts masked). */
void board_panic_write(const char *text);

/* The serial ring has room again: let the UART deliver the bytes it held back. */
void board_uart_rx_resume(void);

/* Hand len bytes to the UART, blocking (sleeping) until it has taken them all. */
void board_uart_write(const uint8_t *buf, uint32_t len);

#endif

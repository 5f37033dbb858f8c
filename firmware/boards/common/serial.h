/*
 * The receive ring between a UART interrupt (producer) and mfn_port_read (consumer).
 *
 * Single producer, single consumer, one core: the interrupt only advances rx_head,
 * the thread only advances rx_tail, so neither needs a lock. When the ring is full
 * the driver stops taking bytes (serial_rx_put() returns 0): a CMSDK UART then holds
 * them back (QEMU's model delivers no byte until the last one was read, so nothing is
 * lost), an STM32 USART drops them and counts them. Nothing is ever written outside
 * the ring.
 */
#ifndef MFN_SERIAL_H
#define MFN_SERIAL_H

#include <stdint.h>

#ifndef MFN_RX_RING_BYTES
#define MFN_RX_RING_BYTES 4096u
#endif

/* Interrupt side: store one byte; 0 when the ring is full (the byte was not stored). */
int serial_rx_put(uint8_t byte);

/* Interrupt side: free bytes in the ring. */
uint32_t serial_rx_space(void);

/* Bytes the board had to drop (ring full on a UART without flow control, overruns). */
extern volatile uint32_t serial_rx_dropped;

#endif

/*
 * What a board (or a host operating system) must provide to the device program.
 *
 * The device program (mfn_device.c) speaks the HIL protocol over one byte stream and
 * times inference with one counter; everything board-specific sits behind these six
 * functions. Implementations: firmware/ports/posix (x86_64 and aarch64 Linux, stdio),
 * firmware/boards/<board>/ (bare metal: UART + counter).
 */
#ifndef MFN_PORT_H
#define MFN_PORT_H

#include <stdint.h>

/* Clocks, caches, the serial link and the counter. Called once, first. */
void mfn_port_init(void);

/*
 * Read up to len bytes from the link into buf. Waits at most timeout_ms for the first
 * byte (sleeping, never spinning, on boards), then returns whatever else is already
 * buffered without waiting more. Returns the number of bytes read, 0 on timeout, and
 * -1 when the link is closed for good (end of file on a host program).
 */
int32_t mfn_port_read(uint8_t *buf, uint32_t len, uint32_t timeout_ms);

/* Write all len bytes, blocking until the link has taken them. */
void mfn_port_write(const uint8_t *buf, uint32_t len);

/* A free-running 64-bit counter for timing inference, in mfn_port_counter_unit(). */
uint64_t mfn_port_counter(void);

/*
 * The counter's unit: "cycles" (DWT CYCCNT on a real Cortex-M), "systick" (SysTick
 * ticks at mfn_port_clock_hz(); under QEMU -icount shift=0 the host turns these into
 * instruction counts), "instructions" (a QEMU TCG plugin), "us" (a host OS clock).
 */
const char *mfn_port_counter_unit(void);

/* The CPU clock in Hz, 0 when unknown (host programs). */
uint32_t mfn_port_clock_hz(void);

#endif

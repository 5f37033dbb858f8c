/*
 * SysTick as the 1 kHz time base for timeouts and a 64-bit counter of CPU clock ticks.
 *
 * SysTick runs from the processor clock and interrupts every millisecond; the
 * interrupt counts whole milliseconds, the current value gives the ticks in between.
 * Under QEMU -icount shift=0 the ticks follow the virtual clock (one instruction per
 * nanosecond), and while the CPU sleeps QEMU advances that clock in real time, so a
 * millisecond of sleep is still a millisecond and timeouts expire.
 */
#ifndef MFN_SYSTICK_H
#define MFN_SYSTICK_H

#include <stdint.h>

/* Start the 1 kHz interrupt; cpu_hz / 1000 must fit SysTick's 24 bits (< 16.7 GHz). */
void systick_start(uint32_t cpu_hz);

/* Milliseconds since systick_start() (interrupts counted). */
uint64_t systick_ms(void);

/* CPU clock ticks since systick_start(), safe to call with interrupts masked. */
uint64_t systick_ticks(void);

/* Called from the SysTick interrupt every millisecond; boards may define it (weak). */
void systick_hook(void);

#endif

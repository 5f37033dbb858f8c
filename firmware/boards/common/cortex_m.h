/*
 * Cortex-M core registers and helpers shared by every bare-metal board (M7, M55).
 *
 * Addresses come from the ARMv7-M and ARMv8-M Architecture Reference Manuals (the
 * System Control Space at 0xE000E000 is the same on both); nothing here is copied
 * from CMSIS.
 */
#ifndef MFN_CORTEX_M_H
#define MFN_CORTEX_M_H

#include <stdint.h>

#define MFN_REG32(address) (*(volatile uint32_t *)(uintptr_t)(address))

/* SysTick */
#define SYST_CSR MFN_REG32(0xE000E010u)
#define SYST_RVR MFN_REG32(0xE000E014u)
#define SYST_CVR MFN_REG32(0xE000E018u)
#define SYST_CSR_ENABLE (1u << 0)
#define SYST_CSR_TICKINT (1u << 1)
#define SYST_CSR_CLKSOURCE_CPU (1u << 2)

/* NVIC: one enable/disable bit per external interrupt, 32 per register. */
#define NVIC_ISER(n) MFN_REG32(0xE000E100u + 4u * (n))
#define NVIC_ICER(n) MFN_REG32(0xE000E180u + 4u * (n))

/* System control block */
#define SCB_ICSR MFN_REG32(0xE000ED04u)
#define SCB_VTOR MFN_REG32(0xE000ED08u)
#define SCB_CCR MFN_REG32(0xE000ED14u)
#define SCB_SHCSR MFN_REG32(0xE000ED24u)
#define SCB_CFSR MFN_REG32(0xE000ED28u)
#define SCB_HFSR MFN_REG32(0xE000ED2Cu)
#define SCB_MMFAR MFN_REG32(0xE000ED34u)
#define SCB_BFAR MFN_REG32(0xE000ED38u)
#define SCB_CCSIDR MFN_REG32(0xE000ED80u)
#define SCB_CSSELR MFN_REG32(0xE000ED84u)
#define SCB_CPACR MFN_REG32(0xE000ED88u)
#define SCB_ICIALLU MFN_REG32(0xE000EF50u)
#define SCB_DCISW MFN_REG32(0xE000EF60u)
#define SCB_ICSR_PENDSTSET (1u << 26)
#define SCB_CCR_DC (1u << 16)
#define SCB_CCR_IC (1u << 17)
/* MemManage, BusFault and UsageFault get their own handlers instead of escalating. */
#define SCB_SHCSR_FAULT_ENABLES ((1u << 16) | (1u << 17) | (1u << 18))
/* CP10 + CP11 full access: the FPU, and on Armv8.1-M also the MVE (Helium) unit. */
#define SCB_CPACR_FPU_FULL_ACCESS (0xFu << 20)

/* Debug cycle counter (present on real M7/M55 silicon; QEMU reads it as 0). */
#define DEMCR MFN_REG32(0xE000EDFCu)
#define DEMCR_TRCENA (1u << 24)
#define DWT_CTRL MFN_REG32(0xE0001000u)
#define DWT_CYCCNT MFN_REG32(0xE0001004u)
#define DWT_LAR MFN_REG32(0xE0001FB0u)
#define DWT_LAR_UNLOCK 0xC5ACCE55u
#define DWT_CTRL_CYCCNTENA (1u << 0)

static inline uint32_t irq_save(void)
{
    uint32_t primask;
    __asm__ volatile("mrs %0, primask\n\tcpsid i" : "=r"(primask)::"memory");
    return primask;
}

static inline void irq_restore(uint32_t primask)
{
    __asm__ volatile("msr primask, %0" ::"r"(primask) : "memory");
}

/* Sleeps until an interrupt is pending; wakes even while PRIMASK masks it. */
static inline void wait_for_interrupt(void)
{
    __asm__ volatile("dsb\n\twfi" ::: "memory");
}

static inline void barrier_dsb_isb(void)
{
    __asm__ volatile("dsb\n\tisb" ::: "memory");
}

static inline void nvic_enable(uint32_t irq)
{
    NVIC_ISER(irq / 32u) = 1u << (irq % 32u);
}

static inline void nvic_disable(uint32_t irq)
{
    NVIC_ICER(irq / 32u) = 1u << (irq % 32u);
    barrier_dsb_isb();
}

/* Invalidate then enable the L1 instruction and data caches (Cortex-M7 / M55). */
void cortex_m_enable_caches(void);

#endif

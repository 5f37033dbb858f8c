/*
 * ST STM32H743 (NUCLEO-H743ZI / H743ZI2): 480 MHz, caches on, USART3 on PD8/PD9 (the
 * ST-Link virtual COM port), DWT CYCCNT as the counter.
 *
 * Register addresses and bit positions were written from ST's public reference manual
 * RM0433 (and cross-checked against the field tables generated from ST's SVD files);
 * no vendor source is used.
 *
 * NOT VERIFIED ON HARDWARE: this file builds warning-free and its image is size-checked,
 * but it has never run on a board. Unverified in particular: the power/clock sequence
 * (LDO supply lock, VOS1 -> VOS0 through SYSCFG ODEN, PLL1 lock, the switch to PLL1),
 * the HSE-bypass fallback to HSI, the flash wait states, the USART3 baud rate, the
 * cache enable, and that the Nucleo's ST-Link drives HSE with its 8 MHz MCO (solder
 * bridge default on NUCLEO-H743ZI2; check yours).
 */
#include "board.h"
#include "cortex_m.h"
#include "mfn_port.h"
#include "serial.h"
#include "systick.h"

/* RCC (RM0433 section 8) */
#define RCC_BASE 0x58024400u
#define RCC_CR MFN_REG32(RCC_BASE + 0x00u)
#define RCC_CFGR MFN_REG32(RCC_BASE + 0x10u)
#define RCC_D1CFGR MFN_REG32(RCC_BASE + 0x18u)
#define RCC_D2CFGR MFN_REG32(RCC_BASE + 0x1Cu)
#define RCC_D3CFGR MFN_REG32(RCC_BASE + 0x20u)
#define RCC_PLLCKSELR MFN_REG32(RCC_BASE + 0x28u)
#define RCC_PLLCFGR MFN_REG32(RCC_BASE + 0x2Cu)
#define RCC_PLL1DIVR MFN_REG32(RCC_BASE + 0x30u)
#define RCC_AHB4ENR MFN_REG32(RCC_BASE + 0xE0u)
#define RCC_APB1LENR MFN_REG32(RCC_BASE + 0xE8u)
#define RCC_APB4ENR MFN_REG32(RCC_BASE + 0xF4u)
#define RCC_CR_HSERDY (1u << 17)
#define RCC_CR_HSEON (1u << 16)
#define RCC_CR_HSEBYP (1u << 18)
#define RCC_CR_PLL1ON (1u << 24)
#define RCC_CR_PLL1RDY (1u << 25)
#define RCC_CFGR_SW_PLL1 3u
#define RCC_CFGR_SWS_SHIFT 3
#define RCC_PLLSRC_HSI 0u
#define RCC_PLLSRC_HSE 2u
#define RCC_AHB4ENR_GPIOD (1u << 3)
#define RCC_APB1LENR_USART3 (1u << 18)
#define RCC_APB4ENR_SYSCFG (1u << 1)

/* PWR (RM0433 section 6), SYSCFG, flash interface, debug MCU */
#define PWR_CSR1 MFN_REG32(0x58024804u)
#define PWR_CR3 MFN_REG32(0x5802480Cu)
#define PWR_D3CR MFN_REG32(0x58024818u)
#define PWR_CSR1_ACTVOSRDY (1u << 13)
#define PWR_CR3_BYPASS (1u << 0)
#define PWR_CR3_LDOEN (1u << 1)
#define PWR_CR3_SCUEN (1u << 2)
#define PWR_D3CR_VOSRDY (1u << 13)
#define PWR_D3CR_VOS_SHIFT 14
#define PWR_D3CR_VOS1 3u
#define SYSCFG_PWRCR MFN_REG32(0x5800042Cu)
#define SYSCFG_PWRCR_ODEN (1u << 0)
#define FLASH_ACR MFN_REG32(0x52002000u)
#define DBGMCU_IDC MFN_REG32(0x5C001000u)
#define REV_ID_Y 0x1003u /* first silicon: 400 MHz at most, no overdrive */

/* GPIOD and USART3 (RM0433 sections 11 and 48) */
#define GPIOD_BASE 0x58020C00u
#define GPIOD_MODER MFN_REG32(GPIOD_BASE + 0x00u)
#define GPIOD_OSPEEDR MFN_REG32(GPIOD_BASE + 0x08u)
#define GPIOD_PUPDR MFN_REG32(GPIOD_BASE + 0x0Cu)
#define GPIOD_AFRH MFN_REG32(GPIOD_BASE + 0x24u)
#define USART3_BASE 0x40004800u
#define USART3_CR1 MFN_REG32(USART3_BASE + 0x00u)
#define USART3_CR3 MFN_REG32(USART3_BASE + 0x08u)
#define USART3_BRR MFN_REG32(USART3_BASE + 0x0Cu)
#define USART3_ISR MFN_REG32(USART3_BASE + 0x1Cu)
#define USART3_ICR MFN_REG32(USART3_BASE + 0x20u)
#define USART3_RDR MFN_REG32(USART3_BASE + 0x24u)
#define USART3_TDR MFN_REG32(USART3_BASE + 0x28u)
#define USART_CR1_UE (1u << 0)
#define USART_CR1_RE (1u << 2)
#define USART_CR1_TE (1u << 3)
#define USART_CR1_RXNEIE (1u << 5)
#define USART_CR1_TXEIE (1u << 7)
#define USART_ISR_ERRORS 0xFu /* PE, FE, NE, ORE: cleared by the same bits in ICR */
#define USART_ISR_ORE (1u << 3)
#define USART_ISR_RXNE (1u << 5)
#define USART_ISR_TXE (1u << 7)
#define USART3_IRQ 39u
#define USART3_BAUD 115200u

/* How long to poll a ready flag before giving up (~10 ms at 64 MHz HSI, more when faster). */
#define READY_POLLS 200000u

/* HSI (64 MHz, every prescaler /1) is the reset clock; clock_init() updates both as it goes. */
static uint32_t cpu_clock_hz = 64000000u;
static uint32_t apb1_clock_hz = 64000000u;

static int wait_set(volatile uint32_t *reg, uint32_t mask, uint32_t value)
{
    for (uint32_t i = 0; i < READY_POLLS; i++) {
        if ((*reg & mask) == value) {
            return 1;
        }
    }
    return 0;
}

/*
 * sys_ck = PLL1P = 2 MHz reference x N / 2. Bus clocks: AXI/AHB = sys_ck / 2 (240 MHz at
 * most), every APB = AHB / 2 (120 MHz at most); USART3's kernel clock is APB1 (reset
 * choice). Returns the CPU clock reached.
 */
static uint32_t clock_init(void)
{
    const int rev_y = (DBGMCU_IDC >> 16) == REV_ID_Y;
    const uint32_t pll_n = rev_y ? 400u : 480u; /* VCO 800 / 960 MHz, wide range */

    /* 1. Supply: LDO (no SMPS on the H743). This lower byte of PWR_CR3 is write-once after power-on. */
    PWR_CR3 = (PWR_CR3 & ~(PWR_CR3_BYPASS | PWR_CR3_SCUEN)) | PWR_CR3_LDOEN;
    if (!wait_set(&PWR_CSR1, PWR_CSR1_ACTVOSRDY, PWR_CSR1_ACTVOSRDY)) {
        return cpu_clock_hz;
    }

    /* 2. Voltage: VOS1, then VOS0 (the LDO "overdrive", needed above 400 MHz) via SYSCFG. */
    PWR_D3CR = (PWR_D3CR & ~(3u << PWR_D3CR_VOS_SHIFT)) | (PWR_D3CR_VOS1 << PWR_D3CR_VOS_SHIFT);
    (void)wait_set(&PWR_D3CR, PWR_D3CR_VOSRDY, PWR_D3CR_VOSRDY);
    if (!rev_y) {
        RCC_APB4ENR |= RCC_APB4ENR_SYSCFG;
        (void)RCC_APB4ENR; /* the clock must run before SYSCFG is written */
        SYSCFG_PWRCR |= SYSCFG_PWRCR_ODEN;
        (void)wait_set(&PWR_D3CR, PWR_D3CR_VOSRDY, PWR_D3CR_VOSRDY);
    }

    /* 3. Flash: 4 wait states and WRHIGHFREQ=2, enough for AXI at 240 MHz in VOS0, before speeding up. */
    FLASH_ACR = 4u | (2u << 4);
    if (!wait_set(&FLASH_ACR, 0x3Fu, 4u | (2u << 4))) {
        return cpu_clock_hz;
    }

    /* 4. Reference: HSE bypass (8 MHz from the ST-Link MCO) / 4, or HSI 64 MHz / 32 if HSE is silent. */
    RCC_CR |= RCC_CR_HSEBYP;
    RCC_CR |= RCC_CR_HSEON;
    const int hse = wait_set(&RCC_CR, RCC_CR_HSERDY, RCC_CR_HSERDY);
    const uint32_t source = hse ? RCC_PLLSRC_HSE : RCC_PLLSRC_HSI;
    const uint32_t divm1 = hse ? 4u : 32u;

    /* 5. PLL1: 2 MHz in (PLL1RGE=1: 2-4 MHz), wide VCO, integer mode, P=2, Q=4, R=2, all outputs on. */
    RCC_PLLCKSELR = (RCC_PLLCKSELR & ~(3u | (0x3Fu << 4))) | source | (divm1 << 4);
    RCC_PLLCFGR = (RCC_PLLCFGR & ~0xFu) | (1u << 2) | (1u << 16) | (1u << 17) | (1u << 18);
    RCC_PLL1DIVR = (pll_n - 1u) | ((2u - 1u) << 9) | ((4u - 1u) << 16) | ((2u - 1u) << 24);
    RCC_CR |= RCC_CR_PLL1ON;
    if (!wait_set(&RCC_CR, RCC_CR_PLL1RDY, RCC_CR_PLL1RDY)) {
        return cpu_clock_hz;
    }

    /* 6. Prescalers before the switch: core /1, AHB /2 (HPRE=8), APB3/1/2/4 /2 (4). */
    RCC_D1CFGR = (0u << 8) | (8u << 0) | (4u << 4);
    RCC_D2CFGR = (4u << 4) | (4u << 8);
    RCC_D3CFGR = (4u << 4);
    apb1_clock_hz = cpu_clock_hz / 4u; /* still HSI here: 64 / 2 (AHB) / 2 (APB1) */

    /* 7. Switch sys_ck to PLL1. */
    RCC_CFGR = (RCC_CFGR & ~7u) | RCC_CFGR_SW_PLL1;
    if (!wait_set(&RCC_CFGR, 7u << RCC_CFGR_SWS_SHIFT, RCC_CFGR_SW_PLL1 << RCC_CFGR_SWS_SHIFT)) {
        return cpu_clock_hz;
    }
    const uint32_t pll_hz = 2000000u * pll_n / 2u;
    apb1_clock_hz = pll_hz / 4u;
    return pll_hz;
}

static void usart3_init(void)
{
    RCC_AHB4ENR |= RCC_AHB4ENR_GPIOD;
    RCC_APB1LENR |= RCC_APB1LENR_USART3;
    (void)RCC_APB1LENR;

    /* PD8 = TX, PD9 = RX: alternate function 7, medium speed, pull-up on RX (idle high). */
    GPIOD_MODER = (GPIOD_MODER & ~(0xFu << 16)) | (0xAu << 16);
    GPIOD_OSPEEDR = (GPIOD_OSPEEDR & ~(0xFu << 16)) | (0x5u << 16);
    GPIOD_PUPDR = (GPIOD_PUPDR & ~(0xFu << 16)) | (0x4u << 16);
    GPIOD_AFRH = (GPIOD_AFRH & ~0xFFu) | 0x77u;

    USART3_CR1 = 0;
    USART3_CR3 = 0;
    USART3_BRR = (apb1_clock_hz + USART3_BAUD / 2u) / USART3_BAUD; /* 16x oversampling */
    USART3_ICR = USART_ISR_ERRORS;
    USART3_CR1 = USART_CR1_UE | USART_CR1_TE | USART_CR1_RE | USART_CR1_RXNEIE;
    nvic_enable(USART3_IRQ);
}

void mfn_port_init(void)
{
    cpu_clock_hz = clock_init();
    cortex_m_enable_caches();

    /* DWT cycle counter; the lock access register must be opened on the Cortex-M7. */
    DEMCR |= DEMCR_TRCENA;
    DWT_LAR = DWT_LAR_UNLOCK;
    DWT_CYCCNT = 0;
    DWT_CTRL |= DWT_CTRL_CYCCNTENA;

    systick_start(cpu_clock_hz);
    usart3_init();
}

void board_irq(uint32_t irq)
{
    if (irq != USART3_IRQ) {
        nvic_disable(irq); /* nobody asked for it: silence it rather than loop */
        return;
    }
    const uint32_t status = USART3_ISR;
    if (status & USART_ISR_ERRORS) {
        USART3_ICR = status & USART_ISR_ERRORS;
        if (status & USART_ISR_ORE) {
            serial_rx_dropped = serial_rx_dropped + 1u; /* at least one byte lost in hardware */
        }
    }
    while (USART3_ISR & USART_ISR_RXNE) {
        /* No flow control on the ST-Link VCP: with the ring full, the byte is dropped and counted. */
        if (!serial_rx_put((uint8_t)USART3_RDR)) {
            serial_rx_dropped = serial_rx_dropped + 1u;
        }
    }
    if ((USART3_CR1 & USART_CR1_TXEIE) && (USART3_ISR & USART_ISR_TXE)) {
        USART3_CR1 &= ~USART_CR1_TXEIE; /* TXE stays set until written: stop the request, wake the writer */
    }
}

void board_uart_rx_resume(void)
{
    /* Nothing held back: this USART cannot pause the sender. */
}

void board_uart_write(const uint8_t *buf, uint32_t len)
{
    for (uint32_t i = 0; i < len; i++) {
        while (!(USART3_ISR & USART_ISR_TXE)) {
            const uint32_t primask = irq_save();
            USART3_CR1 |= USART_CR1_TXEIE;
            if (!(USART3_ISR & USART_ISR_TXE)) {
                wait_for_interrupt();
            }
            USART3_CR1 &= ~USART_CR1_TXEIE;
            irq_restore(primask);
        }
        USART3_TDR = buf[i];
    }
}

void board_panic_write(const char *text)
{
    if (!(USART3_CR1 & USART_CR1_UE)) {
        return; /* faulted before mfn_port_init(): nowhere to print */
    }
    for (; *text; text++) {
        while (!(USART3_ISR & USART_ISR_TXE)) {
        }
        USART3_TDR = (uint8_t)*text;
    }
}

/* CYCCNT wraps every 8.9 s at 480 MHz; the 1 kHz SysTick hook sees every wrap. */
static uint32_t cycles_high, cycles_last;

static uint64_t cycles_now(void)
{
    const uint32_t primask = irq_save();
    const uint32_t now = DWT_CYCCNT;
    if (now < cycles_last) {
        cycles_high++;
    }
    cycles_last = now;
    const uint64_t cycles = ((uint64_t)cycles_high << 32) | now;
    irq_restore(primask);
    return cycles;
}

void systick_hook(void)
{
    (void)cycles_now();
}

uint64_t mfn_port_counter(void)
{
    return cycles_now();
}

const char *mfn_port_counter_unit(void)
{
    return "cycles";
}

uint32_t mfn_port_clock_hz(void)
{
    return cpu_clock_hz;
}

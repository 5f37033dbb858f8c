#include "systick.h"

#include "cortex_m.h"

static uint32_t ticks_per_ms;
static volatile uint64_t elapsed_ms; /* written only by the interrupt */

__attribute__((weak)) void systick_hook(void)
{
}

void SysTick_Handler(void)
{
    elapsed_ms = elapsed_ms + 1u;
    systick_hook();
}

void systick_start(uint32_t cpu_hz)
{
    ticks_per_ms = cpu_hz / 1000u;
    SYST_CSR = 0;
    SYST_RVR = ticks_per_ms - 1u;
    SYST_CVR = 0;
    SYST_CSR = SYST_CSR_CLKSOURCE_CPU | SYST_CSR_TICKINT | SYST_CSR_ENABLE;
}

uint64_t systick_ms(void)
{
    const uint32_t primask = irq_save(); /* a 64-bit load is two loads: keep the interrupt out */
    const uint64_t ms = elapsed_ms;
    irq_restore(primask);
    return ms;
}

uint64_t systick_ticks(void)
{
    const uint32_t primask = irq_save();
    uint64_t ms = elapsed_ms;
    uint32_t current = SYST_CVR;
    /*
     * The counter may have wrapped without the interrupt having run yet (it is pending
     * while we hold PRIMASK, or wrapped just after the read). Then the value read may
     * be before or after the wrap: read it again, now surely after, and count the
     * missing millisecond ourselves. A second read of 0 means the reload has not
     * happened yet: that 0 is still the last tick of the old millisecond.
     */
    if (SCB_ICSR & SCB_ICSR_PENDSTSET) {
        const uint32_t again = SYST_CVR;
        if (again != 0u) {
            current = again;
            ms += 1u;
        } else {
            current = 0u;
        }
    }
    irq_restore(primask);
    return ms * ticks_per_ms + (ticks_per_ms - 1u - current);
}

/*
 * Arm CMSDK APB UART (MPS2 and MPS3 FPGA images, and QEMU's models of them).
 * One-byte transmit and receive buffers, separate TX and RX interrupt lines.
 */
#ifndef MFN_CMSDK_UART_H
#define MFN_CMSDK_UART_H

#include <stdint.h>

typedef struct {
    uint32_t base;
    uint32_t pclk_hz; /* the UART's APB clock, for the baud divider */
    uint32_t baud;
    uint32_t rx_irq;
    uint32_t tx_irq;
} cmsdk_uart_config_t;

void cmsdk_uart_init(const cmsdk_uart_config_t *config);

/* From board_irq(): handles irq if it is this UART's, returns 1 if it was. */
int cmsdk_uart_irq(uint32_t irq);

#endif

# stm32h743 (NUCLEO-H743ZI class; real board only). Include after setting BOARDS_DIR
# to the absolute path of firmware/boards; defines CC, BOARD_CFLAGS, BOARD_LDFLAGS,
# BOARD_SOURCES (absolute paths) and the helpers listed in docs/boards.md.
ifndef BOARDS_DIR
$(error set BOARDS_DIR to the absolute path of firmware/boards before including board.mk)
endif
BOARD := stm32h743
BOARD_DIR := $(BOARDS_DIR)/$(BOARD)
# targets/stm32h743.toml [toolchain] cflags, without the optimisation level.
BOARD_ARCH_FLAGS := -mcpu=cortex-m7 -mthumb -mfloat-abi=hard -mfpu=fpv5-d16
# 150 interrupt lines (RM0433 vector table); USART3 is 39.
BOARD_CFLAGS := -DMFN_BOARD_IRQ_COUNT=150
BOARD_LDFLAGS :=
BOARD_SOURCES := $(BOARD_DIR)/board.c
BOARD_QEMU_MACHINE :=
include $(BOARDS_DIR)/common/cortex_m.mk

# mps3-an547 (QEMU -M mps3-an547). Include after setting BOARDS_DIR to the absolute
# path of firmware/boards; defines CC, BOARD_CFLAGS, BOARD_LDFLAGS, BOARD_SOURCES
# (absolute paths) and the helpers listed in docs/boards.md.
ifndef BOARDS_DIR
$(error set BOARDS_DIR to the absolute path of firmware/boards before including board.mk)
endif
BOARD := mps3-an547
BOARD_DIR := $(BOARDS_DIR)/$(BOARD)
# targets/mps3-an547.toml [toolchain] cflags, without the optimisation level.
BOARD_ARCH_FLAGS := -mcpu=cortex-m55 -mthumb -mfloat-abi=hard
BOARD_CFLAGS := -DMFN_BOARD_IRQ_COUNT=96
BOARD_LDFLAGS :=
BOARD_SOURCES := $(BOARD_DIR)/board.c $(BOARDS_DIR)/common/cmsdk_uart.c
BOARD_QEMU_MACHINE := mps3-an547
include $(BOARDS_DIR)/common/cortex_m.mk

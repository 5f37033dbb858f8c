# mps2-an500 (QEMU -M mps2-an500). Include after setting BOARDS_DIR to the absolute
# path of firmware/boards; defines CC, BOARD_CFLAGS, BOARD_LDFLAGS, BOARD_SOURCES
# (absolute paths) and the helpers listed in docs/boards.md.
ifndef BOARDS_DIR
$(error set BOARDS_DIR to the absolute path of firmware/boards before including board.mk)
endif
BOARD := mps2-an500
BOARD_DIR := $(BOARDS_DIR)/$(BOARD)
# targets/mps2-an500.toml [toolchain] cflags, without the optimisation level.
BOARD_ARCH_FLAGS := -mcpu=cortex-m7 -mthumb -mfloat-abi=hard -mfpu=fpv5-d16
BOARD_CFLAGS := -DMFN_BOARD_IRQ_COUNT=32
BOARD_LDFLAGS :=
BOARD_SOURCES := $(BOARD_DIR)/board.c $(BOARDS_DIR)/common/cmsdk_uart.c
BOARD_QEMU_MACHINE := mps2-an500
include $(BOARDS_DIR)/common/cortex_m.mk

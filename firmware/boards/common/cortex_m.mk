# Shared part of every bare-metal board.mk (included by them; not used on its own).
# Needs BOARDS_DIR and BOARD_ARCH_FLAGS; adds to BOARD_CFLAGS, BOARD_LDFLAGS, BOARD_SOURCES.

CC := arm-none-eabi-gcc
BOARD_SIZE := arm-none-eabi-size
BOARD_OBJCOPY := arm-none-eabi-objcopy

BOARD_COMMON_DIR := $(BOARDS_DIR)/common
# mfn_port.h lives in firmware/device, next to firmware/boards.
BOARD_CFLAGS += $(BOARD_ARCH_FLAGS) -ffunction-sections -fdata-sections \
	-I$(BOARD_COMMON_DIR) -I$(BOARD_DIR) -I$(abspath $(BOARDS_DIR)/../device)
# The CPU flags again at link time: they pick newlib's multilib (FPU / MVE variant).
# newlib-nano supplies memcpy/memset; nothing here calls malloc or stdio.
BOARD_LDFLAGS += $(BOARD_ARCH_FLAGS) -T$(BOARD_DIR)/link.ld -nostartfiles \
	--specs=nano.specs --specs=nosys.specs -Wl,--gc-sections -Wl,--no-warn-rwx-segments
BOARD_SOURCES += $(BOARD_COMMON_DIR)/startup.c $(BOARD_COMMON_DIR)/systick.c $(BOARD_COMMON_DIR)/serial.c

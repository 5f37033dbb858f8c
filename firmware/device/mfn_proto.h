/*
 * HIL protocol framing (docs/protocol.md): CRCs, frame encoding and an incremental
 * frame receiver that resynchronises on garbage, truncation and corruption.
 */
#ifndef MFN_PROTO_H
#define MFN_PROTO_H

#include <stdint.h>

#define MFN_PROTO_VERSION 1
#define MFN_MAX_PAYLOAD 4096u
#define MFN_HEADER_BYTES 10u
#define MFN_FRAME_OVERHEAD (MFN_HEADER_BYTES + 4u)
#define MFN_FRAME_QUIET_MS 250u

enum {
    MFN_CMD_INFO = 0x01,
    MFN_CMD_LOAD = 0x02,
    MFN_CMD_RUN = 0x03,
    MFN_CMD_LAYERS = 0x04,
    MFN_CMD_ECHO = 0x05,
    MFN_CMD_RESET = 0x06,
    MFN_TYPE_BOOT = 0x40,
    MFN_TYPE_ERROR = 0x7F,
    MFN_REPLY_BIT = 0x80
};

enum {
    MFN_ERR_BAD_CRC = 1,
    MFN_ERR_BAD_VERSION = 2,
    MFN_ERR_UNKNOWN_COMMAND = 3,
    MFN_ERR_BAD_LENGTH = 4,
    MFN_ERR_OUT_OF_RANGE = 5,
    MFN_ERR_NOT_READY = 6,
    MFN_ERR_TOO_LARGE = 7
};

uint16_t mfn_crc16(const uint8_t *data, uint32_t len);
uint32_t mfn_crc32(const uint8_t *data, uint32_t len);

/* Write a frame header for a payload of len bytes into out[MFN_HEADER_BYTES]. */
void mfn_frame_header(uint8_t *out, uint8_t type, uint8_t seq, uint16_t len);

/* What the receiver found after being given more bytes. */
typedef enum {
    MFN_RX_NONE,       /* nothing complete yet */
    MFN_RX_FRAME,      /* a good frame: type, seq, payload, len are set */
    MFN_RX_BAD_CRC,    /* intact header, damaged payload: type and seq are set */
    MFN_RX_TOO_LARGE,  /* header announced more than MFN_MAX_PAYLOAD: type and seq are set */
    MFN_RX_BAD_VERSION /* intact header of another protocol version: type and seq are set */
} mfn_rx_event_t;

typedef struct {
    uint8_t buf[MFN_MAX_PAYLOAD + MFN_FRAME_OVERHEAD];
    uint32_t used;
    /* the last event's frame */
    uint8_t type, seq;
    const uint8_t *payload;
    uint16_t len;
    uint32_t consume; /* bytes to drop before the next poll */
} mfn_rx_t;

void mfn_rx_init(mfn_rx_t *rx);

/* Free space the receiver can take now (call mfn_rx_poll first to drop consumed bytes). */
uint32_t mfn_rx_space(const mfn_rx_t *rx);

/* Account for n bytes the caller read into rx->buf + rx->used. */
void mfn_rx_added(mfn_rx_t *rx, uint32_t n);

/* Look for the next event in the buffered bytes. Call until it returns MFN_RX_NONE. */
mfn_rx_event_t mfn_rx_poll(mfn_rx_t *rx);

/* The link went quiet mid-frame: drop the partial frame's first byte and rescan. */
void mfn_rx_quiet(mfn_rx_t *rx);

#endif

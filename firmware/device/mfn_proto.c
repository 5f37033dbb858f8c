/* HIL protocol framing: see mfn_proto.h and docs/protocol.md. */
#include "mfn_proto.h"

#include <string.h>

uint16_t mfn_crc16(const uint8_t *data, uint32_t len)
{
    uint16_t crc = 0xFFFF;
    uint32_t i;
    int bit;
    for (i = 0; i < len; ++i) {
        crc ^= (uint16_t)(data[i] << 8);
        for (bit = 0; bit < 8; ++bit) {
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
        }
    }
    return crc;
}

/* Nibble-table CRC-32: 64 bytes of table, ~4x faster than bit by bit. */
uint32_t mfn_crc32(const uint8_t *data, uint32_t len)
{
    static const uint32_t table[16] = {
        0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u,
        0x4DB26158u, 0x5005713Cu, 0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu,
        0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu,
    };
    uint32_t crc = 0xFFFFFFFFu;
    uint32_t i;
    for (i = 0; i < len; ++i) {
        crc ^= data[i];
        crc = (crc >> 4) ^ table[crc & 15u];
        crc = (crc >> 4) ^ table[crc & 15u];
    }
    return crc ^ 0xFFFFFFFFu;
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

void mfn_frame_header(uint8_t *out, uint8_t type, uint8_t seq, uint16_t len)
{
    uint16_t crc;
    out[0] = 'M';
    out[1] = 'F';
    out[2] = MFN_PROTO_VERSION;
    out[3] = type;
    out[4] = seq;
    out[5] = 0;
    out[6] = (uint8_t)(len & 0xFF);
    out[7] = (uint8_t)(len >> 8);
    crc = mfn_crc16(out, 8);
    out[8] = (uint8_t)(crc & 0xFF);
    out[9] = (uint8_t)(crc >> 8);
}

void mfn_rx_init(mfn_rx_t *rx)
{
    rx->used = 0;
    rx->consume = 0;
    rx->payload = NULL;
    rx->len = 0;
}

uint32_t mfn_rx_space(const mfn_rx_t *rx)
{
    return (uint32_t)sizeof rx->buf - rx->used;
}

void mfn_rx_added(mfn_rx_t *rx, uint32_t n)
{
    rx->used += n <= mfn_rx_space(rx) ? n : mfn_rx_space(rx);
}

static void drop(mfn_rx_t *rx, uint32_t n)
{
    if (n >= rx->used) {
        rx->used = 0;
        return;
    }
    memmove(rx->buf, rx->buf + n, rx->used - n);
    rx->used -= n;
}

void mfn_rx_quiet(mfn_rx_t *rx)
{
    drop(rx, rx->consume);
    rx->consume = 0;
    if (rx->used > 0) {
        drop(rx, 1);
    }
}

mfn_rx_event_t mfn_rx_poll(mfn_rx_t *rx)
{
    drop(rx, rx->consume);
    rx->consume = 0;
    for (;;) {
        uint32_t start = 0;
        uint16_t len;
        /* Skip to the next magic; keep a trailing 'M' that may start one. */
        while (start < rx->used && !(rx->buf[start] == 'M' && (start + 1 == rx->used || rx->buf[start + 1] == 'F'))) {
            ++start;
        }
        drop(rx, start);
        if (rx->used < MFN_HEADER_BYTES) {
            return MFN_RX_NONE;
        }
        if (mfn_crc16(rx->buf, 8) != get16(rx->buf + 8)) {
            drop(rx, 1);
            continue;
        }
        rx->type = rx->buf[3];
        rx->seq = rx->buf[4];
        len = get16(rx->buf + 6);
        if (rx->buf[2] != MFN_PROTO_VERSION || len > MFN_MAX_PAYLOAD) {
            rx->consume = MFN_HEADER_BYTES;
            return rx->buf[2] != MFN_PROTO_VERSION ? MFN_RX_BAD_VERSION : MFN_RX_TOO_LARGE;
        }
        if (rx->used < MFN_FRAME_OVERHEAD + len) {
            return MFN_RX_NONE;
        }
        if (mfn_crc32(rx->buf + MFN_HEADER_BYTES, len) != get32(rx->buf + MFN_HEADER_BYTES + len)) {
            rx->consume = MFN_HEADER_BYTES;
            return MFN_RX_BAD_CRC;
        }
        rx->payload = rx->buf + MFN_HEADER_BYTES;
        rx->len = len;
        rx->consume = MFN_FRAME_OVERHEAD + len;
        return MFN_RX_FRAME;
    }
}

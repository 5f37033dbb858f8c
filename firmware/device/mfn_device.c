/* The HIL command loop: see mfn_device.h and docs/protocol.md. */
#include "mfn_device.h"

#include <string.h>

#include "mfn_port.h"
#include "mfn_proto.h"

#ifndef MFN_FIRMWARE_VERSION
#define MFN_FIRMWARE_VERSION "unknown"
#endif

static mfn_rx_t rx;
static uint8_t reply[MFN_MAX_PAYLOAD];
static uint8_t output[MFN_MAX_OUTPUT_BYTES];
static uint64_t layer_ticks[MFN_MAX_LAYERS];
static uint64_t layer_mark;
static uint32_t input_held;
static int layers_valid;

static void put16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v & 0xFF);
    p[1] = (uint8_t)((v >> 8) & 0xFF);
}

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, v & 0xFFFF);
    put16(p + 2, v >> 16);
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)(v & 0xFFFFFFFFu));
    put32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t get16(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8);
}

static uint32_t get32(const uint8_t *p)
{
    return get16(p) | (get16(p + 2) << 16);
}

static void send(uint8_t type, uint8_t seq, const uint8_t *payload, uint32_t len)
{
    uint8_t header[MFN_HEADER_BYTES];
    uint8_t crc[4];
    mfn_frame_header(header, type, seq, (uint16_t)len);
    put32(crc, len ? mfn_crc32(payload, len) : 0);
    mfn_port_write(header, MFN_HEADER_BYTES);
    if (len) {
        mfn_port_write(payload, len);
    }
    mfn_port_write(crc, 4);
}

static void send_error(uint8_t seq, uint8_t code, uint8_t request, const char *message)
{
    uint8_t payload[96];
    uint32_t n = (uint32_t)strlen(message);
    if (n > sizeof payload - 2) {
        n = sizeof payload - 2;
    }
    payload[0] = code;
    payload[1] = request;
    memcpy(payload + 2, message, n);
    send(MFN_TYPE_ERROR, seq, payload, n + 2);
}

/* Append "key=value\n" to the INFO text; value is a string or, when NULL, number. */
static uint32_t add_info(uint32_t at, const char *key, const char *text, uint32_t number)
{
    char digits[11];
    uint32_t i = sizeof digits;
    const char *value = text;
    uint32_t n;
    if (!value) {
        do {
            digits[--i] = (char)('0' + number % 10);
            number /= 10;
        } while (number && i > 0);
        value = digits + i;
        n = sizeof digits - i;
    } else {
        n = (uint32_t)strlen(value);
    }
    if (at + strlen(key) + n + 2 > sizeof reply) {
        return at;
    }
    memcpy(reply + at, key, strlen(key));
    at += (uint32_t)strlen(key);
    reply[at++] = '=';
    memcpy(reply + at, value, n);
    at += n;
    reply[at++] = '\n';
    return at;
}

static uint32_t info_text(const mfn_device_model_t *m)
{
    uint32_t at = 0;
    at = add_info(at, "protocol", NULL, MFN_PROTO_VERSION);
    at = add_info(at, "firmware", MFN_FIRMWARE_VERSION, 0);
    at = add_info(at, "target", m->target, 0);
    at = add_info(at, "backend", m->backend, 0);
    at = add_info(at, "model", m->model_hash, 0);
    at = add_info(at, "input_bytes", NULL, m->input_bytes);
    at = add_info(at, "input_shape", m->input_shape, 0);
    at = add_info(at, "output_count", NULL, m->output_count);
    at = add_info(at, "output_dtype", m->output_dtype, 0);
    at = add_info(at, "arena_bytes", NULL, m->arena_bytes);
    at = add_info(at, "kernels", m->kernels, 0);
    at = add_info(at, "layers", NULL, m->layer_count);
    at = add_info(at, "counter", mfn_port_counter_unit(), 0);
    at = add_info(at, "clock_hz", NULL, mfn_port_clock_hz());
    at = add_info(at, "max_payload", NULL, MFN_MAX_PAYLOAD);
    return at;
}

static void time_layer(int32_t layer, void *context)
{
    const uint64_t now = mfn_port_counter();
    (void)context;
    if (layer >= 0 && (uint32_t)layer < MFN_MAX_LAYERS) {
        layer_ticks[layer] = now - layer_mark;
    }
    layer_mark = mfn_port_counter(); /* leaves the hook's own time out */
}

static void run(const mfn_device_model_t *m, uint8_t seq, const uint8_t *p, uint32_t len)
{
    uint32_t warmup, timed, i, at;
    int per_layer;
    if (len != 5) {
        send_error(seq, MFN_ERR_BAD_LENGTH, MFN_CMD_RUN, "RUN takes 5 bytes");
        return;
    }
    warmup = get16(p);
    timed = get16(p + 2);
    per_layer = p[4] & 1;
    if (timed < 1 || timed > MFN_MAX_TIMED_RUNS || warmup > 1000) {
        send_error(seq, MFN_ERR_OUT_OF_RANGE, MFN_CMD_RUN, "timed runs must be 1-64, warm-up <= 1000");
        return;
    }
    if (input_held < m->input_bytes) {
        send_error(seq, MFN_ERR_NOT_READY, MFN_CMD_RUN, "input incomplete");
        return;
    }
    for (i = 0; i < warmup; ++i) {
        m->run(m->input, output, NULL, NULL);
    }
    at = 4;
    for (i = 0; i < timed; ++i) {
        const int timing_layers = per_layer && i + 1 == timed;
        uint64_t start;
        layer_mark = mfn_port_counter();
        start = layer_mark;
        m->run(m->input, output, timing_layers ? time_layer : NULL, NULL);
        put64(reply + at, mfn_port_counter() - start);
        at += 8;
        if (timing_layers) {
            layers_valid = 1;
        }
    }
    put16(reply, timed);
    put16(reply + 2, m->output_bytes);
    memcpy(reply + at, output, m->output_bytes);
    send(MFN_CMD_RUN | MFN_REPLY_BIT, seq, reply, at + m->output_bytes);
}

static void layers(const mfn_device_model_t *m, uint8_t seq)
{
    uint32_t i, count = m->layer_count < MFN_MAX_LAYERS ? m->layer_count : MFN_MAX_LAYERS;
    if (count * 8 + 2 > sizeof reply) {
        count = (uint32_t)(sizeof reply - 2) / 8;
    }
    if (!layers_valid) {
        send_error(seq, MFN_ERR_NOT_READY, MFN_CMD_LAYERS, "no per-layer run yet");
        return;
    }
    put16(reply, count);
    for (i = 0; i < count; ++i) {
        put64(reply + 2 + 8 * i, layer_ticks[i]);
    }
    send(MFN_CMD_LAYERS | MFN_REPLY_BIT, seq, reply, 2 + 8 * count);
}

static void load(const mfn_device_model_t *m, uint8_t seq, const uint8_t *p, uint32_t len)
{
    uint32_t offset, n;
    if (len < 4) {
        send_error(seq, MFN_ERR_BAD_LENGTH, MFN_CMD_LOAD, "LOAD needs a 4-byte offset");
        return;
    }
    offset = get32(p);
    n = len - 4;
    if (offset > input_held || offset > m->input_bytes || n > m->input_bytes - offset) {
        send_error(seq, MFN_ERR_OUT_OF_RANGE, MFN_CMD_LOAD, "chunk leaves a gap or ends past the input");
        return;
    }
    memcpy(m->input + offset, p + 4, n);
    if (offset + n > input_held) {
        input_held = offset + n;
    }
    put32(reply, input_held);
    send(MFN_CMD_LOAD | MFN_REPLY_BIT, seq, reply, 4);
}

static void dispatch(const mfn_device_model_t *m, uint8_t type, uint8_t seq, const uint8_t *p, uint32_t len)
{
    switch (type) {
    case MFN_CMD_INFO:
        send(MFN_CMD_INFO | MFN_REPLY_BIT, seq, reply, info_text(m));
        break;
    case MFN_CMD_LOAD:
        load(m, seq, p, len);
        break;
    case MFN_CMD_RUN:
        run(m, seq, p, len);
        break;
    case MFN_CMD_LAYERS:
        layers(m, seq);
        break;
    case MFN_CMD_ECHO:
        memcpy(reply, p, len);
        send(MFN_CMD_ECHO | MFN_REPLY_BIT, seq, reply, len);
        break;
    case MFN_CMD_RESET:
        input_held = 0;
        layers_valid = 0;
        send(MFN_CMD_RESET | MFN_REPLY_BIT, seq, reply, 0);
        break;
    default:
        send_error(seq, MFN_ERR_UNKNOWN_COMMAND, type, "unknown command");
        break;
    }
}

void mfn_device_serve(const mfn_device_model_t *model)
{
    mfn_rx_init(&rx);
    input_held = 0;
    layers_valid = 0;
    send(MFN_TYPE_BOOT, 0, reply, info_text(model));
    for (;;) {
        mfn_rx_event_t event;
        int32_t got;
        while ((event = mfn_rx_poll(&rx)) != MFN_RX_NONE) {
            switch (event) {
            case MFN_RX_FRAME:
                dispatch(model, rx.type, rx.seq, rx.payload, rx.len);
                break;
            case MFN_RX_BAD_CRC:
                send_error(rx.seq, MFN_ERR_BAD_CRC, rx.type, "payload CRC mismatch");
                break;
            case MFN_RX_TOO_LARGE:
                send_error(rx.seq, MFN_ERR_TOO_LARGE, rx.type, "payload longer than max_payload");
                break;
            case MFN_RX_BAD_VERSION:
                send_error(rx.seq, MFN_ERR_BAD_VERSION, rx.type, "protocol version not supported");
                break;
            default:
                break;
            }
        }
        got = mfn_port_read(rx.buf + rx.used, mfn_rx_space(&rx), rx.used ? MFN_FRAME_QUIET_MS : 1000u);
        if (got < 0) {
            return;
        }
        if (got == 0) {
            if (rx.used) {
                mfn_rx_quiet(&rx);
            }
            continue;
        }
        mfn_rx_added(&rx, (uint32_t)got);
    }
}

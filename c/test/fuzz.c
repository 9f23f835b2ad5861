/*
 * The ring fuzz of the Node package (test/channel/fuzz.test.ts) against the C ends: the same
 * generator (mulberry32 PRNG, the same seeds, mutations and operation mix) scribbles ring
 * headers, record headers and data words like a hostile peer while the producer and consumer
 * run. Built with AddressSanitizer and UndefinedBehaviorSanitizer over a ring allocated to its
 * exact size, so any access outside it is a finding; every result must be a valid message or a
 * typed error, and payloads handed out must lie inside the data area.
 * A second fuzz does the same to a bus region: two C peers on an exactly-sized region while
 * random superblock, slot, directory and ring words are scribbled.
 * Usage: fuzz [STATES_PER_SEED]   (8 seeds)
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ivshmem.h"
#include "shared.h"

/* mulberry32, exactly as test/channel/prng.ts */
static uint32_t state;
static uint32_t u32(void) {
    uint32_t t = (state += 0x6d2b79f5u);
    t = (t ^ (t >> 15)) * (t | 1u);
    t ^= t + (t ^ (t >> 7)) * (t | 61u);
    return t ^ (t >> 14);
}
static uint32_t rint_(uint32_t n) { return (uint32_t)(((uint64_t)u32() * n) >> 32); }
static int chance(double p) { return u32() / 4294967296.0 < p; }

enum { O_FORMAT, O_SEND, O_RECEIVED, O_EMPTY, O_DRAIN, O_CLAIM, O_EOF, O_COUNT };
static const char *const outcome_names[] = {"format", "send", "received", "empty", "drain", "claim", "eof"};
static unsigned long outcomes[O_COUNT], fields[IVS_FIELD_PADDING + 1], closed;

static void die(const char *what, uint32_t seed, int s) {
    fprintf(stderr, "fuzz: seed %u state %d: %s\n", seed, s, what);
    exit(1);
}

static void on_status(int r, uint32_t seed, int s, const struct ivs_ring_end *e) {
    if (r >= 0) return;
    if (r == IVS_ERR_CORRUPT) fields[e->field]++;
    else if (r == IVS_ERR_CLOSED) closed++;
    else if (r != IVS_ERR_TOO_LARGE && r != IVS_ERR_BUSY) {
        fprintf(stderr, "unexpected status %s\n", ivs_strerror(r));
        die("an error other than corrupt/closed", seed, s);
    }
    if (r == IVS_ERR_CORRUPT && e->field == IVS_FIELD_NONE) die("corrupt without a field", seed, s);
}

static void fuzz(uint32_t seed, int states) {
    state = seed;
    static const uint32_t capacities[] = {64, 256, 1024};
    uint32_t capacity = capacities[rint_(3)];
    size_t size = IVS_RING_SIZE(capacity);
    uint32_t *ring = malloc(size); /* exactly the ring (8-aligned is all it needs): ASan flags any byte beyond */
    unsigned char *data = (unsigned char *)ring + IVS_RING_HEADER_SIZE;
    memset(ring, 0, size);
    uint8_t *payload = malloc(capacity), *buffer = malloc(capacity);
    memset(payload, 0, capacity);
    struct ivs_producer p;
    struct ivs_consumer c;
    int live = 0;
    for (int s = 0; s < states; s++) {
        if (!live || p.e.error || c.e.error || p.e.closed || chance(0.002)) {
            uint64_t position = chance(0.3) ? 0x100000000ull - 8ull * rint_(capacity / 4) : 8ull * ((uint64_t)rint_(1u << 31) * 32u);
            if (ivs_ring_format(ring, size, capacity, position) != capacity) die("format", seed, s);
            if (ivs_producer_attach(&p, ring, size, NULL) != IVS_OK || ivs_consumer_attach(&c, ring, size, NULL) != IVS_OK)
                die("attach to a fresh ring", seed, s);
            live = 1;
            outcomes[O_FORMAT]++;
        }
        uint32_t head = ring[W_HEAD_LO];
        /* 8-aligned: a scribbled head may be odd, and unlike a typed array in JavaScript, a C write
         * past the end is not dropped silently. */
        uint32_t at = (IVS_RING_HEADER_SIZE + (head & (capacity - 8))) / 4;
        /* Values a hostile peer would try: near the head, the capacity, the 32-bit edges. */
#define EVIL(base)                                                                                              \
    ({                                                                                                          \
        uint32_t b_ = (base);                                                                                   \
        uint32_t pick_[] = {0, 1, 7, 8, capacity - 8, capacity, capacity + 8, 0x7fffffff, 0x80000000, 0xfffffff8, \
                            0xffffffff, IVS_RECORD_TYPE_PADDING, 0x10000, u32(),                               \
                            b_ + 8 * (rint_(capacity / 4 + 3) - 1), b_ - 8 * rint_(4)};                        \
        pick_[rint_(16)];                                                                                       \
    })
        switch (rint_(12)) {
        case 0: ring[W_TAIL_LO] = EVIL(ring[W_TAIL_LO]); break;
        case 1: ring[W_HEAD_LO] = EVIL(head); break;
        case 2: ring[at] = EVIL(ring[at]); break;
        case 3: ring[at + 1] = EVIL(ring[at + 1]); break;
        case 4: {
            uint32_t index = head & (capacity - 8);
            ring[at] = capacity - index - 8 + 8 * (rint_(3) - 1);
            ring[at + 1] = IVS_RECORD_TYPE_PADDING;
            break;
        }
        case 5: {
            uint32_t w = rint_(5);
            ring[w] = chance(0.5) ? u32() : ring[rint_(5)] ^ (1u << rint_(32));
            break;
        }
        case 6: {
            static const int high[] = {W_TAIL_HI, W_WRITER_CLOSED, W_PRODUCER_WAIT, W_HEAD_HI, W_READER_CLOSED, W_CONSUMER_WAIT};
            ring[high[rint_(6)]] = EVIL(0);
            break;
        }
        case 7: ring[IVS_RING_HEADER_SIZE / 4 + rint_(capacity / 4)] = u32(); break;
        default: break; /* honest state: exercise the valid paths too */
        }
        for (uint32_t op = rint_(3) + 1; op > 0; op--) {
            int r;
            switch (rint_(6)) {
            case 0:
            case 1: {
                uint32_t length = rint_(capacity / 2);
                for (uint32_t k = 0; k < length && k < 16; k++) payload[k] = (uint8_t)u32();
                r = ivs_producer_try_send(&p, payload, length, rint_(3));
                on_status(r, seed, s, &p.e);
                outcomes[O_SEND]++;
                break;
            }
            case 2: {
                uint32_t length = 0, type;
                r = ivs_consumer_try_receive(&c, buffer, capacity, &length, &type);
                if (r == IVS_OK && length > capacity - 8) die("received more than the largest payload", seed, s);
                on_status(r, seed, s, &c.e);
                outcomes[r == IVS_OK ? O_RECEIVED : r == IVS_EOF ? O_EOF : O_EMPTY]++;
                break;
            }
            case 3: {
                /* drain: peek in place up to n records; each must lie inside the data area */
                uint32_t n = rint_(4) + 1;
                while (n-- > 0) {
                    const void *view;
                    uint32_t length, type;
                    r = ivs_consumer_peek(&c, &view, &length, &type);
                    if (r != IVS_OK) {
                        on_status(r, seed, s, &c.e);
                        break;
                    }
                    const unsigned char *v = view;
                    if (v < data || v + length > data + capacity) die("a record outside the data area", seed, s);
                    volatile unsigned char sink = length ? v[length - 1] : 0;
                    (void)sink;
                    r = ivs_consumer_release(&c);
                    on_status(r, seed, s, &c.e);
                    if (r != IVS_OK) break;
                }
                outcomes[O_DRAIN]++;
                break;
            }
            case 4: {
                void *view;
                uint32_t size_ = rint_(capacity / 2);
                r = ivs_producer_reserve(&p, size_, &view);
                if (r == IVS_OK) {
                    unsigned char *v = view;
                    if (v < data || v + size_ > data + capacity) die("a reservation outside the data area", seed, s);
                    if (size_) memset(v, 0x5a, size_);
                    r = ivs_producer_commit(&p, rint_(size_ + 1), 0);
                }
                on_status(r, seed, s, &p.e);
                outcomes[O_CLAIM]++;
                break;
            }
            default:
                (void)ivs_consumer_available(&c);
                (void)ivs_producer_free(&p);
                break;
            }
        }
        if (chance(0.01)) {
            struct ivs_consumer other;
            int r = ivs_consumer_attach(&other, ring, size, NULL);
            on_status(r, seed, s, &other.e);
        }
    }
    free(ring);
    free(payload);
    free(buffer);
}

/* ---- The region: two peers, scribbled slots, entries and rings ------------------------------ */

static unsigned long bus_ops, bus_errors, bus_messages;

static void bus_status(int r, uint32_t seed, int s) {
    if (r >= 0) return;
    bus_errors++;
    switch (r) {
    case IVS_ERR_CORRUPT: case IVS_ERR_CLOSED: case IVS_ERR_PEER_GONE: case IVS_ERR_EVICTED: case IVS_ERR_BUS_FULL:
    case IVS_ERR_INVALID: case IVS_ERR_TOO_LARGE: case IVS_ERR_BUSY: case IVS_ERR_REGION: case IVS_ERR_TIMEOUT:
        return;
    default:
        fprintf(stderr, "unexpected status %s\n", ivs_strerror(r));
        die("bus: an unexpected error", seed, s);
    }
}

static void fuzz_region(uint32_t seed, int states) {
    state = seed * 7919u;
    const uint64_t size = 64 * 1024;
    uint32_t *region = malloc(size); /* exactly the region: ASan flags any byte beyond */
    memset(region, 0, size);
    struct ivs_device dev = {.memory = region, .size = size, .id = IVS_NO_DOORBELL};
    static struct ivs_bus bus[2];
    static struct ivs_producer out[2][4];
    static struct ivs_consumer in[2][4];
    int joined[2] = {0, 0};
    struct ivs_region_format fmt = {.max_peers = 2, .entries = 4, .timeout_ms = 1};
    uint8_t buffer[512];
    for (int s = 0; s < states; s++) {
        for (int i = 0; i < 2; i++) {
            if (!joined[i] || bus[i].closed) {
                if (joined[i]) ivs_bus_leave(&bus[i]);
                memset(&bus[i], 0, sizeof bus[i]);
                bus[i].max_peer_period = 10; /* occupied non-peer slots are freed after 30 ms: within the run */
                int r = ivs_bus_join(&bus[i], &dev, i ? "b" : "a", 10, 64 << rint_(3), &fmt);
                bus_status(r, seed, s);
                joined[i] = r == IVS_OK;
                if (!joined[i] && chance(0.5)) memset(region, 0, size); /* start over: a fresh region */
            }
        }
        /* Scribble: the superblock (after join each peer keeps its own copy), a slot word, an
         * entry word, a word of a ring, or nothing. */
        switch (rint_(24)) {
        case 0: region[rint_(16)] = u32(); break;
        case 1: region[(4096 + rint_(2) * 256 + rint_(26) * 4) / 4] = chance(0.5) ? u32() : rint_(4); break;
        case 2: {
            uint32_t sections = region[10], section = region[11];
            uint64_t at = (uint64_t)sections + rint_(2) * (uint64_t)section + rint_(4) * 128u + rint_(8) * 4u;
            if (at + 4 <= size) region[at / 4] = chance(0.5) ? u32() : u32() % 70000;
            break;
        }
        case 3: region[rint_((uint32_t)(size / 4))] = u32(); break;
        default: break;
        }
        for (int i = 0; i < 2; i++) {
            if (!joined[i] || bus[i].closed) continue;
            struct ivs_bus *b = &bus[i];
            int k = (int)rint_(4);
            int r;
            bus_ops++;
            switch (rint_(7)) {
            case 0: r = ivs_bus_tick(b); break;
            case 1: r = ivs_bus_open(b, rint_(3), "ch", 0, &out[i][k]); break;
            case 2: r = ivs_bus_accept(b, "ch", -1, &in[i][k]); break;
            case 3:
                r = out[i][k].e.header ? ivs_producer_try_send(&out[i][k], buffer, rint_(300), 0) : IVS_OK;
                break;
            case 4: {
                uint32_t length, type;
                r = in[i][k].e.header ? ivs_consumer_try_receive(&in[i][k], buffer, sizeof buffer, &length, &type) : IVS_OK;
                if (r == IVS_OK && in[i][k].e.header) bus_messages++;
                break;
            }
            case 5:
                if (out[i][k].e.header) ivs_producer_close(&out[i][k]);
                r = IVS_OK;
                break;
            default:
                if (chance(0.05)) {
                    ivs_bus_leave(b);
                    joined[i] = 0;
                    memset(out[i], 0, sizeof out[i]);
                    memset(in[i], 0, sizeof in[i]);
                }
                r = IVS_OK;
                break;
            }
            bus_status(r, seed, s);
        }
    }
    for (int i = 0; i < 2; i++)
        if (joined[i]) ivs_bus_leave(&bus[i]);
    memset(out, 0, sizeof out);
    memset(in, 0, sizeof in);
    free(region);
}

int main(int argc, char **argv) {
    int states = argc > 1 ? atoi(argv[1]) : 125000;
    for (uint32_t seed = 1; seed <= 8; seed++) fuzz(seed, states);
    printf("c ring fuzz: %d ring states x 8 seeds;", states);
    for (int i = 0; i < O_COUNT; i++) printf(" %s %lu", outcome_names[i], outcomes[i]);
    printf("; corrupt:");
    for (int f = 1; f <= IVS_FIELD_PADDING; f++) printf(" %s %lu", ivs_field_name(f), fields[f]);
    printf("; closed %lu\n", closed);
    /* Every rule must have been hit, and valid traffic must have flowed, or the fuzz proved little. */
    int f[] = {IVS_FIELD_TAIL, IVS_FIELD_HEAD, IVS_FIELD_LENGTH, IVS_FIELD_TYPE, IVS_FIELD_PADDING, IVS_FIELD_MAGIC};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (!fields[f[i]]) return fprintf(stderr, "fuzz: no '%s' corruption was ever detected\n", ivs_field_name(f[i])), 1;
    if (!outcomes[O_RECEIVED]) return fprintf(stderr, "fuzz: nothing was ever received\n"), 1;
    for (uint32_t seed = 1; seed <= 8; seed++) fuzz_region(seed, states / 20);
    printf("c region fuzz: %d region states x 8 seeds; %lu operations, %lu typed errors, %lu messages received\n", states / 20,
           bus_ops, bus_errors, bus_messages);
    if (!bus_messages) return fprintf(stderr, "fuzz: no message ever crossed the region\n"), 1;
    return 0;
}

/*
 * The C ends of bench/c.mjs, over a ring in a file (formatted by the caller), polling with a
 * 50 µs spin like the Node bench's ends. Prints one JSON line.
 *
 *   ivs-bench source PATH OFFSET SIZE MS      sends SIZE-byte messages for MS ms, then closes
 *   ivs-bench sink PATH OFFSET                receives until EOF: {count, bytes, ms}
 *   ivs-bench echo PATH IN_OFFSET OUT_OFFSET  sends every message back until EOF
 *   ivs-bench ping PATH OUT_OFFSET IN_OFFSET SIZE N   round trips: {p50, p99} in µs
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ivshmem.h"
#include "ivshmem_glue.h"

#define SPIN_NS 50000u

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static struct ivs_file file;

static void *ring_at(const char *path, const char *offset, size_t *size) {
    if (ivs_file_open(&file, path, 0, 0) != IVS_OK) {
        perror(path);
        exit(1);
    }
    size_t at = strtoul(offset, NULL, 0);
    *size = file.size - at;
    return (unsigned char *)file.memory + at;
}

static int fail(const char *what, int r) {
    fprintf(stderr, "ivs-bench: %s: %s\n", what, ivs_strerror(r));
    return 1;
}

/* Publishes once per quarter ring (or when full), as the Node writer's batches do. */
static int source(int argc, char **argv) {
    if (argc < 4) return 2;
    size_t size;
    void *ring = ring_at(argv[0], argv[1], &size);
    uint32_t length = (uint32_t)atoi(argv[2]);
    double ms = atof(argv[3]);
    struct ivs_producer p;
    int r = ivs_producer_attach(&p, ring, size, NULL);
    if (r != IVS_OK) return fail("attach", r);
    p.e.spin_ns = SPIN_NS;
    uint8_t *msg = malloc(length + 1);
    memset(msg, 0x5a, length);
    uint32_t quarter = p.e.capacity / 4, unpublished = 0;
    unsigned long count = 0;
    double end = now_ms() + ms;
    while (now_ms() < end) {
        for (int i = 0; i < 64; i++) {
            void *payload;
            r = ivs_producer_reserve(&p, length, &payload);
            if (r == IVS_AGAIN) {
                ivs_producer_flush(&p);
                unpublished = 0;
                r = ivs_producer_send(&p, msg, length, 0, -1);
                if (r != IVS_OK) return fail("send", r);
            } else if (r == IVS_OK) {
                memcpy(payload, msg, length);
                if ((r = ivs_producer_put(&p, length, 0)) != IVS_OK) return fail("put", r);
                unpublished += IVS_RECORD_STRIDE(length);
                if (unpublished >= quarter) {
                    ivs_producer_flush(&p);
                    unpublished = 0;
                }
            } else {
                return fail("reserve", r);
            }
            count++;
        }
    }
    ivs_producer_close(&p);
    printf("{\"count\":%lu}\n", count);
    return 0;
}

static int sink(int argc, char **argv) {
    if (argc < 2) return 2;
    size_t size;
    void *ring = ring_at(argv[0], argv[1], &size);
    struct ivs_consumer c;
    int r = ivs_consumer_attach(&c, ring, size, NULL);
    if (r != IVS_OK) return fail("attach", r);
    c.e.spin_ns = SPIN_NS;
    printf("{\"ready\":true}\n");
    fflush(stdout);
    unsigned long count = 0;
    unsigned long long bytes = 0;
    unsigned check = 0;
    double first = 0;
    for (;;) {
        const void *payload;
        uint32_t length, type;
        r = ivs_consumer_peek(&c, &payload, &length, &type);
        if (r == IVS_AGAIN) {
            r = ivs_consumer_wait(&c, -1);
            if (r == IVS_OK) continue;
        }
        if (r != IVS_OK) break;
        if (!first) first = now_ms();
        const uint8_t *b = payload;
        if (length) check ^= b[0] ^ b[length - 1];
        count++;
        bytes += length;
        if ((r = ivs_consumer_release(&c)) != IVS_OK) break;
    }
    if (r != IVS_EOF) return fail("receive", r);
    printf("{\"count\":%lu,\"bytes\":%llu,\"ms\":%.3f,\"check\":%u}\n", count, bytes, now_ms() - first, check);
    return 0;
}

static int echo(int argc, char **argv) {
    if (argc < 3) return 2;
    size_t size;
    void *base = ring_at(argv[0], "0", &size);
    size_t in_at = strtoul(argv[1], NULL, 0), out_at = strtoul(argv[2], NULL, 0);
    struct ivs_consumer c;
    struct ivs_producer p;
    size_t in_size = (in_at < out_at ? out_at : size) - in_at, out_size = (out_at < in_at ? in_at : size) - out_at;
    int r = ivs_consumer_attach(&c, (unsigned char *)base + in_at, in_size, NULL);
    if (r != IVS_OK) return fail("attach", r);
    if ((r = ivs_producer_attach(&p, (unsigned char *)base + out_at, out_size, NULL)) != IVS_OK) return fail("attach", r);
    c.e.spin_ns = p.e.spin_ns = SPIN_NS;
    printf("{\"ready\":true}\n");
    fflush(stdout);
    uint8_t *buffer = malloc(ivs_max_message(&c.e));
    uint32_t length, type;
    while ((r = ivs_consumer_receive(&c, buffer, ivs_max_message(&c.e), &length, &type, -1)) == IVS_OK)
        if ((r = ivs_producer_send(&p, buffer, length, type, -1)) != IVS_OK) break;
    ivs_producer_close(&p);
    return r == IVS_EOF ? 0 : fail("echo", r);
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int ping(int argc, char **argv) {
    if (argc < 5) return 2;
    size_t size;
    void *base = ring_at(argv[0], "0", &size);
    size_t out_at = strtoul(argv[1], NULL, 0), in_at = strtoul(argv[2], NULL, 0);
    uint32_t length = (uint32_t)atoi(argv[3]);
    int n = atoi(argv[4]);
    size_t in_size = (in_at < out_at ? out_at : size) - in_at, out_size = (out_at < in_at ? in_at : size) - out_at;
    struct ivs_consumer c;
    struct ivs_producer p;
    int r = ivs_producer_attach(&p, (unsigned char *)base + out_at, out_size, NULL);
    if (r != IVS_OK) return fail("attach", r);
    if ((r = ivs_consumer_attach(&c, (unsigned char *)base + in_at, in_size, NULL)) != IVS_OK) return fail("attach", r);
    c.e.spin_ns = p.e.spin_ns = SPIN_NS;
    uint8_t *msg = calloc(1, length + 1), *back = malloc(length + 1);
    double *samples = malloc(sizeof(double) * (size_t)n);
    int kept = 0;
    double deadline = now_ms() + 1500; /* as bench/run.mjs: at most 1.5 s of round trips */
    for (int i = 0; i < n && now_ms() < deadline; i++) {
        double t = now_ms();
        uint32_t got, type;
        if ((r = ivs_producer_send(&p, msg, length, 0, -1)) != IVS_OK) return fail("send", r);
        if ((r = ivs_consumer_receive(&c, back, length + 1, &got, &type, -1)) != IVS_OK) return fail("receive", r);
        if (i >= 50) samples[kept++] = (now_ms() - t) * 1000; /* after warm-up */
    }
    ivs_producer_close(&p);
    qsort(samples, (size_t)kept, sizeof *samples, by_value);
    printf("{\"p50\":%.2f,\"p99\":%.2f,\"n\":%d}\n", kept ? samples[kept / 2] : 0, kept ? samples[(size_t)kept * 99 / 100] : 0, kept);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    if (!strcmp(argv[1], "source")) return source(argc - 2, argv + 2);
    if (!strcmp(argv[1], "sink")) return sink(argc - 2, argv + 2);
    if (!strcmp(argv[1], "echo")) return echo(argc - 2, argv + 2);
    if (!strcmp(argv[1], "ping")) return ping(argc - 2, argv + 2);
    return 2;
}

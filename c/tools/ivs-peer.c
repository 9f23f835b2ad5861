/*
 * A C peer for tests and demos: ring producer/consumer over a file, and a bus peer over a file
 * or a guest's VFIO device that runs a small script of actions. Prints one JSON object a line.
 *
 *   ivs-peer ring-produce PATH OFFSET COUNT MAX [CAPACITY [POSITION]]   (CAPACITY: format first)
 *   ivs-peer ring-consume PATH OFFSET [CAPACITY [POSITION]]
 *   ivs-peer bus file:PATH|vfio:ADDRESS NAME PERIOD_MS ACTION...
 *     wait-peer NAME | send NAME CHANNEL COUNT MAX [CAPACITY] | recv NAME CHANNEL |
 *     echo NAME IN OUT | wait-down NAME | linger MS | leave
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ivshmem.h"
#include "ivshmem_glue.h"
#include "pattern.h"

static int usage(void) {
    fprintf(stderr, "usage: see the comment at the top of c/tools/ivs-peer.c\n");
    return 2;
}

static void report_error(const char *what, int status, const struct ivs_ring_end *e) {
    printf("{\"event\":\"error\",\"what\":\"%s\",\"status\":\"%s\",\"field\":\"%s\"}\n", what, ivs_strerror(status),
           e && status == IVS_ERR_CORRUPT ? ivs_field_name(e->field) : "none");
    fflush(stdout);
}

static uint32_t arg_u32(const char *s) { return (uint32_t)strtoul(s, NULL, 0); }

/* How long a channel wait may block before the bus ticks again: a quarter heartbeat. */
static int slice_ms = 50;

/* ---- ring-produce / ring-consume ------------------------------------------------------------ */

static void *map_ring(struct ivs_file *f, const char *path, uint32_t offset, size_t *size) {
    if (ivs_file_open(f, path, 0, 0) != IVS_OK || offset >= f->size) {
        fprintf(stderr, "ivs-peer: cannot map %s: %s\n", path, strerror(errno));
        exit(1);
    }
    *size = f->size - offset;
    return (unsigned char *)f->memory + offset;
}

static int ring_produce(int argc, char **argv) {
    if (argc < 4) return usage();
    struct ivs_file f;
    size_t size;
    void *ring = map_ring(&f, argv[0], arg_u32(argv[1]), &size);
    uint32_t count = arg_u32(argv[2]), max = arg_u32(argv[3]);
    if (argc > 4 && ivs_ring_format(ring, size, arg_u32(argv[4]), argc > 5 ? strtoull(argv[5], NULL, 0) : 0) < 0) return 1;
    struct ivs_producer p;
    int r = ivs_producer_attach(&p, ring, size, NULL);
    if (r != IVS_OK) return report_error("attach", r, &p.e), 1;
    uint64_t bytes = 0;
    uint8_t *buffer = malloc(max + 1);
    for (uint32_t i = 0; i < count; i++) {
        uint32_t length = pattern_length(i, max);
        pattern_fill(buffer, i, length);
        if ((r = ivs_producer_send(&p, buffer, length, pattern_type(i), -1)) != IVS_OK) return report_error("send", r, &p.e), 1;
        bytes += length;
    }
    free(buffer);
    ivs_producer_close(&p);
    printf("{\"event\":\"sent\",\"count\":%u,\"bytes\":%llu}\n", count, (unsigned long long)bytes);
    ivs_file_close(&f);
    return 0;
}

/* Receives until EOF and checks the pattern; `expected_max` bounds lengths (0: unchecked). */
static int consume_all(struct ivs_consumer *c, const char *channel, struct ivs_bus *bus) {
    uint8_t *buffer = malloc(ivs_max_message(&c->e) + 1);
    uint32_t n = 0;
    uint64_t bytes = 0;
    int r;
    for (;;) {
        uint32_t length, type;
        r = ivs_consumer_receive(c, buffer, ivs_max_message(&c->e), &length, &type, bus ? slice_ms : -1);
        if (r == IVS_ERR_TIMEOUT && bus) {
            if ((r = ivs_bus_tick(bus)) != IVS_OK) break;
            continue;
        }
        if (r != IVS_OK) break;
        if (type != pattern_type(n) || !pattern_check(buffer, n, length)) {
            printf("{\"event\":\"mismatch\",\"channel\":\"%s\",\"index\":%u,\"length\":%u,\"type\":%u}\n", channel, n, length, type);
            fflush(stdout);
            free(buffer);
            return 1;
        }
        n++;
        bytes += length;
        if (bus && (r = ivs_bus_poll(bus)) != IVS_OK) break;
    }
    free(buffer);
    printf("{\"event\":\"received\",\"channel\":\"%s\",\"count\":%u,\"bytes\":%llu,\"end\":\"%s\",\"field\":\"%s\"}\n", channel, n,
           (unsigned long long)bytes, r == IVS_EOF ? "eof" : ivs_strerror(r), r == IVS_ERR_CORRUPT ? ivs_field_name(c->e.field) : "none");
    fflush(stdout);
    return r == IVS_EOF ? 0 : 1;
}

static int ring_consume(int argc, char **argv) {
    if (argc < 2) return usage();
    struct ivs_file f;
    size_t size;
    void *ring = map_ring(&f, argv[0], arg_u32(argv[1]), &size);
    if (argc > 2 && ivs_ring_format(ring, size, arg_u32(argv[2]), argc > 3 ? strtoull(argv[3], NULL, 0) : 0) < 0) return 1;
    struct ivs_consumer c;
    int r = ivs_consumer_attach(&c, ring, size, NULL);
    if (r != IVS_OK) return report_error("attach", r, &c.e), 1;
    printf("{\"event\":\"ready\"}\n");
    fflush(stdout);
    r = consume_all(&c, "ring", NULL);
    ivs_file_close(&f);
    return r;
}

/* ---- bus ------------------------------------------------------------------------------------ */

static void on_peer(void *ctx, const struct ivs_peer *peer, int reason) {
    (void)ctx;
    if (reason == 0)
        printf("{\"event\":\"peer-up\",\"name\":\"%s\",\"slot\":%u,\"deviceId\":%d,\"vectors\":%u}\n", peer->name, peer->slot,
               peer->device_id == IVS_NO_DOORBELL ? -1 : (int)peer->device_id, peer->vectors);
    else
        printf("{\"event\":\"peer-down\",\"name\":\"%s\",\"reason\":\"%s\"}\n", peer->name, ivs_down_reason_name(reason));
    fflush(stdout);
}

static const struct ivs_peer *wait_peer(struct ivs_bus *b, const char *name) {
    const struct ivs_peer *p;
    while (!(p = ivs_bus_find(b, name)))
        if (ivs_bus_wait(b, 10) != IVS_OK) return NULL;
    return p;
}

static int send_pattern(struct ivs_bus *b, struct ivs_producer *p, const char *channel, uint32_t count, uint32_t max) {
    uint8_t *buffer = malloc(max + 1);
    uint64_t bytes = 0;
    int r = IVS_OK;
    for (uint32_t i = 0; i < count && r == IVS_OK; i++) {
        uint32_t length = pattern_length(i, max);
        pattern_fill(buffer, i, length);
        while ((r = ivs_producer_send(p, buffer, length, pattern_type(i), slice_ms)) == IVS_ERR_TIMEOUT)
            if ((r = ivs_bus_tick(b)) != IVS_OK) break;
        bytes += length;
        if (r == IVS_OK) r = ivs_bus_poll(b);
    }
    free(buffer);
    if (r != IVS_OK) return report_error("send", r, &p->e), 1;
    printf("{\"event\":\"sent\",\"channel\":\"%s\",\"count\":%u,\"bytes\":%llu}\n", channel, count, (unsigned long long)bytes);
    fflush(stdout);
    return 0;
}

static int accept_from(struct ivs_bus *b, const struct ivs_peer *from, const char *channel, struct ivs_consumer *c) {
    int r;
    while ((r = ivs_bus_accept(b, channel, (int)from->slot, c)) == IVS_AGAIN)
        if ((r = ivs_bus_wait(b, 10)) != IVS_OK) break;
    if (r != IVS_OK) report_error("accept", r, &c->e);
    return r;
}

/* Echoes every record of channel IN back on OUT, as it came, until EOF. */
static int echo(struct ivs_bus *b, const struct ivs_peer *peer, const char *in, const char *out) {
    static struct ivs_consumer c;
    static struct ivs_producer p;
    if (accept_from(b, peer, in, &c) != IVS_OK) return 1;
    int r = ivs_bus_open(b, peer->slot, out, 0, &p);
    if (r != IVS_OK) return report_error("open", r, NULL), 1;
    uint8_t *buffer = malloc(ivs_max_message(&c.e) + 1);
    uint32_t n = 0;
    for (;;) {
        uint32_t length, type;
        r = ivs_consumer_receive(&c, buffer, ivs_max_message(&c.e), &length, &type, slice_ms);
        if (r == IVS_ERR_TIMEOUT) {
            if ((r = ivs_bus_tick(b)) != IVS_OK) break;
            continue;
        }
        if (r != IVS_OK) break;
        while ((r = ivs_producer_send(&p, buffer, length, type, slice_ms)) == IVS_ERR_TIMEOUT)
            if ((r = ivs_bus_tick(b)) != IVS_OK) break;
        if (r != IVS_OK || (r = ivs_bus_poll(b)) != IVS_OK) break;
        n++;
    }
    free(buffer);
    ivs_producer_close(&p);
    printf("{\"event\":\"echoed\",\"count\":%u,\"end\":\"%s\"}\n", n, r == IVS_EOF ? "eof" : ivs_strerror(r));
    fflush(stdout);
    return r == IVS_EOF ? 0 : 1;
}

static int bus_main(int argc, char **argv) {
    if (argc < 3) return usage();
    static struct ivs_file file;
    static struct ivs_vfio vfio;
    const struct ivs_device *dev;
    if (strncmp(argv[0], "file:", 5) == 0) {
        if (ivs_file_open(&file, argv[0] + 5, 0, 0) != IVS_OK) return fprintf(stderr, "ivs-peer: %s: %s\n", argv[0], strerror(errno)), 1;
        dev = &file.dev;
    } else if (strncmp(argv[0], "vfio:", 5) == 0) {
        if (ivs_vfio_open(&vfio, argv[0] + 5) != IVS_OK) return fprintf(stderr, "ivs-peer: %s: %s\n", argv[0], strerror(errno)), 1;
        dev = &vfio.dev;
    } else {
        return usage();
    }
    static struct ivs_bus bus;
    bus.on_peer = on_peer;
    slice_ms = (int)(arg_u32(argv[2]) / 4 < 5 ? 5 : arg_u32(argv[2]) / 4);
    int r = ivs_bus_join(&bus, dev, argv[1], arg_u32(argv[2]), 0, NULL);
    if (r != IVS_OK) return report_error("join", r, NULL), 1;
    printf("{\"event\":\"ready\",\"slot\":%u,\"session\":%u,\"deviceId\":%d,\"vectors\":%u}\n", bus.self.slot, bus.self.session,
           bus.self.device_id == IVS_NO_DOORBELL ? -1 : (int)bus.self.device_id, bus.self.vectors);
    fflush(stdout);
    static struct ivs_producer producers[8];
    static struct ivs_consumer consumers[8];
    int np = 0, nc = 0, status = 0;
    for (int i = 3; i < argc && status == 0;) {
        const char *action = argv[i++];
        const struct ivs_peer *peer = NULL;
        if (!strcmp(action, "wait-peer") && i < argc) {
            if (!wait_peer(&bus, argv[i++])) status = 1;
        } else if (!strcmp(action, "send") && i + 3 < argc && np < 8) {
            const char *name = argv[i], *channel = argv[i + 1];
            uint32_t count = arg_u32(argv[i + 2]), max = arg_u32(argv[i + 3]);
            i += 4;
            uint32_t capacity = i < argc && argv[i][0] >= '0' && argv[i][0] <= '9' ? arg_u32(argv[i++]) : 0;
            if (!(peer = wait_peer(&bus, name))) { status = 1; break; }
            struct ivs_producer *p = &producers[np++];
            if ((r = ivs_bus_open(&bus, peer->slot, channel, capacity, p)) != IVS_OK) { report_error("open", r, NULL); status = 1; break; }
            status = send_pattern(&bus, p, channel, count, max);
            ivs_producer_close(p);
        } else if (!strcmp(action, "recv") && i + 1 < argc && nc < 8) {
            const char *name = argv[i], *channel = argv[i + 1];
            i += 2;
            if (!(peer = wait_peer(&bus, name))) { status = 1; break; }
            struct ivs_consumer *c = &consumers[nc++];
            if (accept_from(&bus, peer, channel, c) != IVS_OK) { status = 1; break; }
            status = consume_all(c, channel, &bus);
        } else if (!strcmp(action, "echo") && i + 2 < argc) {
            if (!(peer = wait_peer(&bus, argv[i]))) { status = 1; break; }
            status = echo(&bus, peer, argv[i + 1], argv[i + 2]);
            i += 3;
        } else if (!strcmp(action, "wait-down") && i < argc) {
            const char *name = argv[i++];
            if (!wait_peer(&bus, name)) { status = 1; break; }
            while (ivs_bus_find(&bus, name))
                if ((r = ivs_bus_wait(&bus, 10)) != IVS_OK) { status = 1; break; }
        } else if (!strcmp(action, "linger") && i < argc) {
            if ((r = ivs_bus_wait(&bus, (int)arg_u32(argv[i++]))) != IVS_OK) { report_error("linger", r, NULL); status = 1; }
        } else if (!strcmp(action, "leave")) {
            ivs_bus_leave(&bus);
        } else {
            return usage();
        }
    }
    if (bus.error) report_error("bus", bus.error, NULL);
    ivs_bus_leave(&bus);
    printf("{\"event\":\"done\",\"status\":%d,\"rings\":%lu}\n", status, vfio.rings);
    fflush(stdout);
    if (file.memory) ivs_file_close(&file);
    if (vfio.memory) ivs_vfio_close(&vfio);
    return status;
}

int main(int argc, char **argv) {
    if (argc < 2) return usage();
    if (!strcmp(argv[1], "ring-produce")) return ring_produce(argc - 2, argv + 2);
    if (!strcmp(argv[1], "ring-consume")) return ring_consume(argc - 2, argv + 2);
    if (!strcmp(argv[1], "bus")) return bus_main(argc - 2, argv + 2);
    return usage();
}

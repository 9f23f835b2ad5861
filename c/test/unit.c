/* Unit tests of the C library: ring format and validation, both ends, hostile peers, the
 * sleeping protocol, and the region (format, join, liveness, channels, leave). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/hw_breakpoint.h>
#include <linux/perf_event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ivshmem.h"
#include "shared.h"

static int failures, checks;
#define CHECK(cond)                                                                      \
    do {                                                                                 \
        checks++;                                                                        \
        if (!(cond)) {                                                                   \
            failures++;                                                                  \
            fprintf(stderr, "%s:%d: %s: check failed: %s\n", __FILE__, __LINE__, __func__, #cond); \
        }                                                                                \
    } while (0)
#define EQ(a, b)                                                                                           \
    do {                                                                                                   \
        long long a_ = (long long)(a), b_ = (long long)(b);                                                \
        checks++;                                                                                          \
        if (a_ != b_) {                                                                                    \
            failures++;                                                                                    \
            fprintf(stderr, "%s:%d: %s: %s == %lld, expected %s == %lld\n", __FILE__, __LINE__, __func__, #a, a_, #b, b_); \
        }                                                                                                  \
    } while (0)

static _Alignas(128) unsigned char mem[1 << 20];
static uint32_t *words(size_t offset) { return (uint32_t *)(mem + offset); }

/* A fresh ring of `capacity` at the start of `mem`, with both ends attached. */
static void fresh(uint32_t capacity, struct ivs_producer *p, struct ivs_consumer *c) {
    EQ(ivs_ring_format(mem, 4096, capacity, 0), capacity);
    EQ(ivs_producer_attach(p, mem, 4096, NULL), IVS_OK);
    EQ(ivs_consumer_attach(c, mem, 4096, NULL), IVS_OK);
}

static void test_format_and_check(void) {
    uint32_t capacity;
    int field;
    memset(mem, 0, sizeof mem);
    EQ(ivs_ring_check(mem, 4096, &capacity, &field), IVS_ERR_CORRUPT);
    EQ(field, IVS_FIELD_MAGIC);
    EQ(ivs_ring_format(mem, 640 + 1000, 0, 0), 512); /* the largest power of two that fits */
    EQ(ivs_ring_format(mem, 640 + 63, 0, 0), IVS_ERR_SIZE);
    EQ(ivs_ring_format(mem, 4096, 100, 0), IVS_ERR_INVALID);
    EQ(ivs_ring_format(mem, 4096, 64, 4), IVS_ERR_INVALID);
    EQ(ivs_ring_format(mem, 4096, 2048, 0), 2048);
    EQ(ivs_ring_check(mem, 4096, &capacity, &field), IVS_OK);
    EQ(capacity, 2048);
    EQ(ivs_ring_check(mem, 2000, &capacity, &field), IVS_ERR_CORRUPT); /* the ring does not fit the space given */
    EQ(field, IVS_FIELD_CAPACITY);
    struct { int word; uint32_t value; int field; } bad[] = {
        {W_MAGIC, 0x12345678, IVS_FIELD_MAGIC},     {W_VERSION, 2, IVS_FIELD_VERSION},
        {W_HEADER_SIZE, 512, IVS_FIELD_HEADER_SIZE}, {W_CAPACITY, 3000, IVS_FIELD_CAPACITY},
        {W_CAPACITY, 32, IVS_FIELD_CAPACITY},        {W_FLAGS, 1, IVS_FIELD_FLAGS},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ivs_ring_format(mem, 4096, 2048, 0);
        words(0)[bad[i].word] = bad[i].value;
        struct ivs_consumer c;
        EQ(ivs_consumer_attach(&c, mem, 4096, NULL), IVS_ERR_CORRUPT);
        EQ(c.e.field, bad[i].field);
    }
    /* A minor version it does not know is accepted. */
    ivs_ring_format(mem, 4096, 2048, 0);
    words(0)[W_VERSION] = 1 | 7u << 16;
    struct ivs_consumer c;
    EQ(ivs_consumer_attach(&c, mem, 4096, NULL), IVS_OK);
}

static void test_roundtrip_wrap(uint64_t position) {
    memset(mem, 0xee, 8192);
    EQ(ivs_ring_format(mem, 4096, 256, position), 256);
    struct ivs_producer p;
    struct ivs_consumer c;
    EQ(ivs_producer_attach(&p, mem, 4096, NULL), IVS_OK);
    EQ(ivs_consumer_attach(&c, mem, 4096, NULL), IVS_OK);
    uint8_t out[256], in[256];
    uint32_t sent = 0, received = 0;
    /* Sizes that walk the record boundaries around the ring many times over. */
    for (int round = 0; round < 2000; round++) {
        uint32_t length = (uint32_t)(round * 37) % 120;
        for (uint32_t k = 0; k < length; k++) out[k] = (uint8_t)(sent + k);
        int r = ivs_producer_try_send(&p, out, length, sent & 0xffff);
        if (r == IVS_AGAIN) {
            uint32_t len, type;
            EQ(ivs_consumer_try_receive(&c, in, sizeof in, &len, &type), IVS_OK);
            EQ(type, received & 0xffff);
            int ok = 1;
            for (uint32_t k = 0; k < len; k++) ok &= in[k] == (uint8_t)(received + k);
            CHECK(ok);
            received++;
            round--;
            continue;
        }
        EQ(r, IVS_OK);
        sent++;
    }
    ivs_producer_close(&p);
    uint32_t len, type;
    int r;
    while ((r = ivs_consumer_try_receive(&c, in, sizeof in, &len, &type)) == IVS_OK) received++;
    EQ(r, IVS_EOF);
    EQ(received, sent);
    /* The tail's high word followed the low word over 2^32. */
    uint64_t tail = (uint64_t)words(0)[W_TAIL_HI] << 32 | words(0)[W_TAIL_LO];
    CHECK(tail > position);
    EQ(tail, (uint64_t)words(0)[W_HEAD_HI] << 32 | words(0)[W_HEAD_LO]);
}

static void test_backpressure_and_close(void) {
    struct ivs_producer p;
    struct ivs_consumer c;
    fresh(64, &p, &c);
    uint8_t buf[64] = {0};
    EQ(ivs_producer_try_send(&p, buf, 57, 0), IVS_ERR_TOO_LARGE);
    EQ(ivs_producer_try_send(&p, buf, 56, 0), IVS_OK); /* the largest payload: capacity - 8 */
    EQ(ivs_producer_try_send(&p, buf, 0, 0), IVS_AGAIN);
    EQ(ivs_producer_send(&p, buf, 0, 0, 20), IVS_ERR_TIMEOUT);
    EQ(ivs_producer_try_send(&p, buf, 1, 0x10000), IVS_ERR_INVALID);
    uint32_t len, type;
    EQ(ivs_consumer_try_receive(&c, buf, 10, &len, &type), IVS_ERR_TOO_LARGE); /* kept */
    EQ(len, 56);
    EQ(ivs_consumer_try_receive(&c, buf, sizeof buf, &len, &type), IVS_OK);
    EQ(ivs_consumer_try_receive(&c, buf, sizeof buf, &len, &type), IVS_AGAIN);
    EQ(ivs_consumer_wait(&c, 10), IVS_ERR_TIMEOUT);
    EQ(ivs_producer_free(&p), 64);
    /* A reservation blocks other sends until committed or abandoned. */
    void *view;
    EQ(ivs_producer_reserve(&p, 16, &view), IVS_OK);
    EQ(ivs_producer_try_send(&p, buf, 1, 0), IVS_ERR_BUSY);
    ivs_producer_abandon(&p);
    EQ(ivs_producer_try_send(&p, buf, 1, 0), IVS_OK);
    ivs_consumer_close(&c);
    EQ(ivs_producer_try_send(&p, buf, 1, 0), IVS_ERR_CLOSED);
    struct ivs_consumer again;
    EQ(ivs_consumer_attach(&again, mem, 4096, NULL), IVS_ERR_CLOSED);
}

/* A hostile producer: every rule of SPEC "Validation" the consumer enforces. */
static void test_hostile_producer(void) {
    struct { const char *what; int field; } cases[] = {
        {"tail misaligned", IVS_FIELD_TAIL},   {"tail too far", IVS_FIELD_TAIL},   {"tail backwards", IVS_FIELD_TAIL},
        {"length too large", IVS_FIELD_LENGTH}, {"past the tail", IVS_FIELD_LENGTH}, {"type reserved", IVS_FIELD_TYPE},
        {"padding short", IVS_FIELD_PADDING},  {"padding at 0", IVS_FIELD_PADDING}, {"header changed", IVS_FIELD_LENGTH},
        {"magic", IVS_FIELD_MAGIC},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct ivs_producer p;
        struct ivs_consumer c;
        fresh(256, &p, &c);
        uint8_t buf[256] = {0};
        uint32_t *data = words(640), *h = words(0);
        uint32_t len, type;
        ivs_producer_try_send(&p, buf, 16, 1);
        ivs_producer_try_send(&p, buf, 16, 1);
        int r = IVS_OK;
        switch (i) {
        case 0: h[W_TAIL_LO] = 52; break;
        case 1: h[W_TAIL_LO] = 264; break;
        case 2:
            EQ(ivs_consumer_try_receive(&c, buf, sizeof buf, &len, &type), IVS_OK);
            h[W_TAIL_LO] = 24; /* the second record, seen published, is taken back */
            break;
        case 3: data[0] = 249; break;
        case 4: data[0] = 100; break;
        case 5: data[1] = 0x10000; break;
        case 6:
            /* padding at 48 that stops 8 bytes short of the end */
            EQ(ivs_consumer_try_receive(&c, buf, sizeof buf, &len, &type), IVS_OK);
            EQ(ivs_consumer_try_receive(&c, buf, sizeof buf, &len, &type), IVS_OK);
            data[12] = 256 - 48 - 16;
            data[13] = IVS_RECORD_TYPE_PADDING;
            h[W_TAIL_LO] = 256;
            break;
        case 7: data[0] = 248; data[1] = IVS_RECORD_TYPE_PADDING; break;
        case 8: {
            const void *payload;
            EQ(ivs_consumer_peek(&c, &payload, &len, &type), IVS_OK);
            data[0] = 8; /* rewritten while we read it */
            r = ivs_consumer_release(&c);
            break;
        }
        case 9:
            EQ(ivs_consumer_try_receive(&c, buf, sizeof buf, &len, &type), IVS_OK);
            EQ(ivs_consumer_try_receive(&c, buf, sizeof buf, &len, &type), IVS_OK);
            h[W_MAGIC] = 0;
            r = ivs_consumer_wait(&c, 5); /* the slow path re-checks the header */
            break;
        }
        if (r == IVS_OK)
            while ((r = ivs_consumer_try_receive(&c, buf, sizeof buf, &len, &type)) == IVS_OK) {}
        if (r != IVS_ERR_CORRUPT || c.e.field != cases[i].field)
            fprintf(stderr, "hostile producer case '%s': %s (%s)\n", cases[i].what, ivs_strerror(r), ivs_field_name(c.e.field));
        EQ(r, IVS_ERR_CORRUPT);
        EQ(c.e.field, cases[i].field);
        /* The failure is sticky. */
        EQ(ivs_consumer_try_receive(&c, buf, sizeof buf, &len, &type), IVS_ERR_CORRUPT);
    }
}

static void test_hostile_consumer(void) {
    uint32_t heads[] = {4, 72, 0xfffffff8};
    for (size_t i = 0; i < 3; i++) {
        ivs_ring_format(mem, 4096, 256, 0);
        struct ivs_producer p;
        ivs_producer_attach(&p, mem, 4096, NULL);
        uint8_t buf[200] = {0};
        EQ(ivs_producer_try_send(&p, buf, 56, 0), IVS_OK); /* tail 64 */
        words(0)[W_HEAD_LO] = heads[i];                    /* misaligned, beyond the tail, behind by more than the capacity */
        EQ(ivs_producer_try_send(&p, buf, 200, 0), IVS_ERR_CORRUPT);
        EQ(p.e.field, IVS_FIELD_HEAD);
    }
}

/* Doorbell suppression: one ring per sleep (per odd value of the wait word), none while awake. */
static int rings;
static int count_ring(void *ctx) {
    (void)ctx;
    rings++;
    return 0;
}

static void test_doorbell_suppression(void) {
    ivs_ring_format(mem, 4096, 256, 0);
    struct ivs_doorbell bell = {.ring = count_ring, .fd = -1};
    struct ivs_producer p;
    ivs_producer_attach(&p, mem, 4096, &bell);
    uint8_t buf[8] = {0};
    rings = 0;
    ivs_producer_try_send(&p, buf, 8, 0);
    EQ(rings, 0); /* the consumer is awake (even) */
    words(0)[W_CONSUMER_WAIT] = 1;
    ivs_producer_try_send(&p, buf, 8, 0);
    ivs_producer_try_send(&p, buf, 8, 0);
    EQ(rings, 1); /* rung once for this sleep */
    words(0)[W_CONSUMER_WAIT] = 3;  /* another sleeper entered: rung again */
    ivs_producer_try_send(&p, buf, 8, 0);
    EQ(rings, 2);
    words(0)[W_CONSUMER_WAIT] = 4;
    ivs_producer_close(&p);
    EQ(rings, 2);
    words(0)[W_CONSUMER_WAIT] = 5;
    struct ivs_producer q;
    ivs_ring_format(mem, 4096, 256, 0);
    words(0)[W_CONSUMER_WAIT] = 5;
    ivs_producer_attach(&q, mem, 4096, &bell);
    ivs_producer_close(&q); /* close rings a sleeper even if already rung */
    EQ(rings, 3);
}

/* Two processes sleeping on eventfds: a slow consumer makes the producer sleep on a full ring,
 * a slow producer makes the consumer sleep on an empty one; nothing is lost. */
static int ring_fd(void *ctx) {
    uint64_t one = 1;
    return write(*(int *)ctx, &one, sizeof one) == sizeof one ? 0 : -1;
}

static void test_sleeping_processes(void) {
    unsigned char *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ivs_ring_format(shared, 4096, 128, 0);
    int to_consumer = eventfd(0, EFD_NONBLOCK), to_producer = eventfd(0, EFD_NONBLOCK);
    const uint32_t count = 20000;
    pid_t pid = fork();
    if (pid == 0) {
        struct ivs_doorbell bell = {.ring = ring_fd, .ctx = &to_producer, .fd = to_consumer};
        struct ivs_consumer c;
        if (ivs_consumer_attach(&c, shared, 4096, &bell) != IVS_OK) _exit(10);
        c.e.spin_ns = 0; /* always sleep */
        uint32_t n = 0, len, type, value;
        int r;
        while ((r = ivs_consumer_receive(&c, &value, sizeof value, &len, &type, 10000)) == IVS_OK) {
            if (value != n) _exit(11);
            n++;
            if (n % 5000 == 0) usleep(20000); /* let the producer fill the ring and sleep */
        }
        _exit(r == IVS_EOF && n == count ? 0 : 12);
    }
    struct ivs_doorbell bell = {.ring = ring_fd, .ctx = &to_consumer, .fd = to_producer};
    struct ivs_producer p;
    EQ(ivs_producer_attach(&p, shared, 4096, &bell), IVS_OK);
    p.e.spin_ns = 0;
    for (uint32_t i = 0; i < count; i++) {
        if (i % 7000 == 0) usleep(20000); /* let the consumer empty the ring and sleep */
        EQ(ivs_producer_send(&p, &i, sizeof i, 0, 10000), IVS_OK);
    }
    ivs_producer_close(&p);
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status));
    EQ(WEXITSTATUS(status), 0);
    /* Both went back to even: nobody sleeps. */
    EQ(((uint32_t *)shared)[W_CONSUMER_WAIT] & 1, 0);
    EQ(((uint32_t *)shared)[W_PRODUCER_WAIT] & 1, 0);
    CHECK(((uint32_t *)shared)[W_CONSUMER_WAIT] > 0); /* and did sleep */
    CHECK(((uint32_t *)shared)[W_PRODUCER_WAIT] > 0);
    munmap(shared, 4096);
    close(to_consumer);
    close(to_producer);
}

/* ---- Region ------------------------------------------------------------------------------- */

static struct ivs_peer last_peer;
static int last_reason = -1;
static void on_peer(void *ctx, const struct ivs_peer *peer, int reason) {
    (void)ctx;
    last_peer = *peer;
    last_reason = reason;
}

static void sleep_ms(int ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void test_region(void) {
    memset(mem, 0, sizeof mem);
    struct ivs_geometry g;
    EQ(ivs_region_open(mem, 4096, NULL, 0, &g), IVS_ERR_SIZE);
    struct ivs_region_format fmt = {.max_peers = 4, .entries = 8};
    EQ(ivs_region_open(mem, sizeof mem, &fmt, 0, &g), IVS_OK);
    EQ(g.max_peers, 4);
    EQ(g.sections_offset, 8192);
    EQ(g.section_size, (sizeof mem - 8192) / 4 / 4096 * 4096);
    EQ(words(0)[1], IVS_REGION_READY);
    struct ivs_geometry again;
    EQ(ivs_region_open(mem, sizeof mem, NULL, 0, &again), IVS_OK); /* joined, not formatted */
    EQ(again.generation, g.generation);
    EQ(ivs_region_open(mem, sizeof mem - 4096, NULL, 0, &again), IVS_ERR_REGION); /* another size */
    words(0)[2] = 2;
    EQ(ivs_region_open(mem, sizeof mem, NULL, 0, &again), IVS_ERR_REGION); /* another major version */
    words(0)[2] = 1;
    words(0)[11] = 1u << 30;
    EQ(ivs_region_open(mem, sizeof mem, NULL, 0, &again), IVS_ERR_REGION); /* sections past the end */
    memset(mem, 0, 4096);
    words(0)[0] = 0x7f454c46;
    EQ(ivs_region_open(mem, sizeof mem, NULL, 0, &again), IVS_ERR_REGION); /* never formatted over */
    EQ(words(0)[1], 0);
    memset(mem, 0, 4096);
    words(0)[1] = 1234; /* a formatter that died */
    EQ(ivs_region_open(mem, sizeof mem, NULL, 30, &again), IVS_ERR_TIMEOUT);
}

static void test_bus(void) {
    memset(mem, 0, sizeof mem);
    struct ivs_device dev = {.memory = mem, .size = sizeof mem, .id = IVS_NO_DOORBELL};
    static struct ivs_bus a, b;
    struct ivs_region_format fmt = {.max_peers = 4, .entries = 4};
    EQ(ivs_bus_join(&a, &dev, "alice", 20, 0, &fmt), IVS_OK);
    EQ(ivs_bus_join(&b, &dev, "bob", 20, 1024, NULL), IVS_OK);
    EQ(a.self.slot, 0);
    EQ(b.self.slot, 1);
    a.on_peer = on_peer;
    ivs_bus_tick(&a);
    CHECK(ivs_bus_find(&a, "bob") != NULL);
    CHECK(ivs_bus_find(&b, "alice") != NULL);
    EQ(last_reason, 0);
    CHECK(strcmp(last_peer.name, "bob") == 0);

    /* A channel each way; a name nobody opened is not there. */
    struct ivs_producer ab, ba;
    struct ivs_consumer from_a, from_b, none;
    EQ(ivs_bus_accept(&b, "ping", -1, &from_a), IVS_AGAIN);
    EQ(ivs_bus_open(&a, b.self.slot, "ping", 0, &ab), IVS_OK);
    EQ(ivs_bus_open(&b, a.self.slot, "pong", 0, &ba), IVS_OK);
    EQ(ivs_max_message(&ba.e), 1016);
    EQ(ivs_bus_accept(&b, "nope", -1, &none), IVS_AGAIN);
    EQ(ivs_bus_accept(&b, "ping", (int)a.self.slot, &from_a), IVS_OK);
    EQ(ivs_bus_accept(&b, "ping", -1, &none), IVS_AGAIN); /* taken once */
    EQ(ivs_bus_accept(&a, "pong", -1, &from_b), IVS_OK);
    uint32_t v = 42, len, type;
    EQ(ivs_producer_try_send(&ab, &v, 4, 3), IVS_OK);
    v = 0;
    EQ(ivs_consumer_try_receive(&from_a, &v, 4, &len, &type), IVS_OK);
    EQ(v, 42);
    EQ(type, 3);

    /* Heartbeat loss: bob stops ticking; alice declares him down and frees his slot; bob, when
     * he looks again, finds himself evicted. */
    EQ(ivs_producer_try_send(&ba, &v, 4, 0), IVS_OK);
    uint64_t start = ivs_now_ms();
    while (ivs_bus_find(&a, "bob") && ivs_now_ms() - start < 5000) {
        ivs_bus_tick(&a);
        sleep_ms(5);
    }
    CHECK(ivs_bus_find(&a, "bob") == NULL);
    EQ(last_reason, IVS_DOWN_HEARTBEAT);
    EQ(ivs_consumer_try_receive(&from_b, &v, 4, &len, &type), IVS_ERR_PEER_GONE);
    EQ(ivs_producer_try_send(&ab, &v, 4, 0), IVS_ERR_PEER_GONE);
    sleep_ms(25);
    EQ(ivs_bus_tick(&b), IVS_ERR_EVICTED);
    EQ(ivs_producer_try_send(&ba, &v, 4, 0), IVS_ERR_EVICTED);
    /* Evicted, bob writes nothing more: closing his reader leaves alice's ring alone. */
    ivs_consumer_close(&from_a);
    EQ(from_a.e.header[W_READER_CLOSED], 0);
    EQ(ivs_producer_try_send(&ab, &v, 4, 0), IVS_ERR_PEER_GONE);
    ivs_bus_leave(&b);

    /* A new bob takes the freed slot; he opens a channel, sends, closes and leaves: alice sees
     * 'left' and still reads his channel to EOF. */
    memset(&b, 0, sizeof b);
    EQ(ivs_bus_join(&b, &dev, "bob", 20, 0, NULL), IVS_OK);
    EQ(b.self.slot, 1);
    ivs_bus_tick(&a);
    ivs_bus_tick(&b);
    CHECK(ivs_bus_find(&a, "bob") != NULL);
    EQ(ivs_bus_open(&b, a.self.slot, "last", 0, &ba), IVS_OK);
    struct ivs_consumer last;
    EQ(ivs_bus_accept(&a, "last", -1, &last), IVS_OK);
    v = 7;
    EQ(ivs_producer_try_send(&ba, &v, 4, 0), IVS_OK);
    ivs_bus_leave(&b);
    ivs_bus_tick(&a);
    CHECK(ivs_bus_find(&a, "bob") == NULL);
    EQ(last_reason, IVS_DOWN_LEFT);
    v = 0;
    EQ(ivs_consumer_try_receive(&last, &v, 4, &len, &type), IVS_OK);
    EQ(v, 7);
    EQ(ivs_consumer_try_receive(&last, &v, 4, &len, &type), IVS_EOF);

    /* The region fills up: four slots. */
    static struct ivs_bus more[4];
    int joined = 0, full = 0;
    for (int i = 0; i < 4; i++) {
        int r = ivs_bus_join(&more[i], &dev, "more", 1000, 0, NULL);
        joined += r == IVS_OK;
        full += r == IVS_ERR_BUS_FULL;
    }
    EQ(joined, 3);
    EQ(full, 1);
    for (int i = 0; i < 3; i++) ivs_bus_leave(&more[i]);
    ivs_bus_leave(&a);
    EQ(ivs_bus_join(&a, &dev, "", 20, 0, NULL), IVS_ERR_INVALID);
    EQ(ivs_bus_join(&a, &dev, "x", 5, 0, NULL), IVS_ERR_INVALID);
}

/* alice and bob on a fresh region in `mem`, polling, each declaring `period` ms, seen by alice. */
static void two_peers(struct ivs_bus *a, struct ivs_bus *b, uint32_t period) {
    memset(mem, 0, sizeof mem);
    struct ivs_device dev = {.memory = mem, .size = sizeof mem, .id = IVS_NO_DOORBELL};
    EQ(ivs_bus_join(a, &dev, "alice", period, 0, NULL), IVS_OK);
    EQ(ivs_bus_join(b, &dev, "bob", period, 0, NULL), IVS_OK);
    ivs_bus_tick(a);
}

/* alice and bob, bob writing channel `name` to alice, who accepted it. */
static void connected(struct ivs_bus *a, struct ivs_bus *b, const char *name, struct ivs_producer *p, struct ivs_consumer *c) {
    two_peers(a, b, 1000);
    ivs_bus_tick(b);
    EQ(ivs_bus_open(b, a->self.slot, name, 0, p), IVS_OK);
    EQ(ivs_bus_accept(a, name, -1, c), IVS_OK);
}

/* Entries another peer scribbled over are skipped, never followed out of its section. */
static void test_hostile_directory(void) {
    static struct ivs_bus a, b;
    two_peers(&a, &b, 1000);
    struct ivs_producer p;
    EQ(ivs_bus_open(&a, b.self.slot, "x", 0, &p), IVS_OK);
    uint32_t *entry = words(a.g.sections_offset);
    uint32_t saved = entry[4];
    uint32_t offsets[] = {0, 4096, saved + 4, (uint32_t)a.g.sections_offset + a.g.section_size - 100, 0xfffffff8};
    struct ivs_consumer c;
    for (size_t i = 0; i < 5; i++) {
        entry[4] = offsets[i];
        EQ(ivs_bus_accept(&b, "x", -1, &c), IVS_AGAIN);
    }
    entry[4] = saved;
    entry[7] = 65; /* name length */
    EQ(ivs_bus_accept(&b, "x", -1, &c), IVS_AGAIN);
    entry[7] = 1;
    /* A ring the writer corrupted: refused with the field, and not offered again. */
    words(saved)[W_CAPACITY] = 1u << 29;
    EQ(ivs_bus_accept(&b, "x", -1, &c), IVS_ERR_CORRUPT);
    EQ(c.e.field, IVS_FIELD_CAPACITY);
    EQ(ivs_bus_accept(&b, "x", -1, &c), IVS_AGAIN);
    ivs_bus_leave(&a);
    ivs_bus_leave(&b);
}

/* ---- SPEC 1.1 ---------------------------------------------------------------------------- */

/* Formatters write minor version 1 (ring and region). */
static void test_minor_version(void) {
    memset(mem, 0, sizeof mem);
    ivs_ring_format(mem, 4096, 256, 0);
    EQ(words(0)[W_VERSION], 1u | 1u << 16);
    memset(mem, 0, sizeof mem);
    struct ivs_geometry g;
    EQ(ivs_region_open(mem, sizeof mem, NULL, 0, &g), IVS_OK);
    EQ(words(0)[2], 1u | 1u << 16);
}

/* SPEC 2.7: a consumer that makes its wait word a new odd value after every publish draws at
 * most 64 doorbells plus one per 20 µs; the one held back is sent later, not dropped. */
static void test_doorbell_limit(void) {
    ivs_ring_format(mem, 4096, 256, 0);
    struct ivs_doorbell bell = {.ring = count_ring, .fd = -1};
    struct ivs_producer p;
    struct ivs_consumer c;
    EQ(ivs_producer_attach(&p, mem, 4096, &bell), IVS_OK);
    EQ(ivs_consumer_attach(&c, mem, 4096, NULL), IVS_OK);
    uint8_t buf[8] = {0};
    uint32_t len, type, seq = 1;
    rings = 0;
    uint64_t start = ivs_now_ms();
    for (int i = 0; i < 20000; i++, seq += 2) {
        words(0)[W_CONSUMER_WAIT] = seq;
        EQ(ivs_producer_try_send(&p, buf, 8, 0), IVS_OK);
        EQ(ivs_consumer_try_receive(&c, buf, 8, &len, &type), IVS_OK);
    }
    uint64_t elapsed_ms = ivs_now_ms() - start + 1;
    CHECK(rings >= 64);
    CHECK((uint64_t)rings <= 64 + elapsed_ms * 50 + 1);
    /* The last sleep (seq - 2) was held back or rung: either way it is rung in the end. */
    uint64_t until = ivs_now_ms() + 5000;
    while (ivs_ring_doorbells(&p.e) && ivs_now_ms() < until) {
    }
    EQ(p.e.deferred, 0);
    EQ(p.e.rung, seq - 2);
    /* A held-back doorbell whose sleeper woke meanwhile is not sent. */
    p.e.tokens = 0;
    p.e.refilled_ns = UINT64_MAX; /* no token for a long while */
    words(0)[W_CONSUMER_WAIT] = seq;
    int before = rings;
    EQ(ivs_producer_try_send(&p, buf, 8, 0), IVS_OK);
    EQ(rings, before);
    EQ(p.e.deferred, 1);
    words(0)[W_CONSUMER_WAIT] = seq + 1; /* awake */
    p.e.refilled_ns = 0; /* tokens again */
    EQ(ivs_ring_doorbells(&p.e), 0);
    EQ(rings, before);
}

/* SPEC 2.8 (1.1): a consumer at end of stream stores reader-closed, so the writer's side may
 * reuse the ring; a detached one (its peer is down) writes nothing, not even its head. */
static void test_reader_closed_at_eof(void) {
    struct ivs_producer p;
    struct ivs_consumer c;
    fresh(256, &p, &c);
    uint32_t v = 9, len, type;
    EQ(ivs_producer_try_send(&p, &v, 4, 0), IVS_OK);
    ivs_producer_close(&p);
    EQ(ivs_consumer_try_receive(&c, &v, 4, &len, &type), IVS_OK);
    EQ(words(0)[W_READER_CLOSED], 0); /* not yet: the stream has not been seen to end */
    EQ(ivs_consumer_try_receive(&c, &v, 4, &len, &type), IVS_EOF);
    EQ(words(0)[W_READER_CLOSED], 1);
    EQ(words(0)[W_HEAD_LO], words(0)[W_TAIL_LO]);

    fresh(256, &p, &c);
    EQ(ivs_producer_try_send(&p, &v, 4, 0), IVS_OK);
    ivs_producer_close(&p);
    ivs_ring_detach(&c.e);
    uint32_t head = words(0)[W_HEAD_LO];
    EQ(ivs_consumer_try_receive(&c, &v, 4, &len, &type), IVS_OK);
    EQ(ivs_consumer_try_receive(&c, &v, 4, &len, &type), IVS_EOF);
    EQ(words(0)[W_HEAD_LO], head);
    EQ(words(0)[W_READER_CLOSED], 0);
    ivs_consumer_close(&c);
    EQ(words(0)[W_READER_CLOSED], 0);
}

/* SPEC 3.5 (1.1): a peer beats every half period; it is down only after 3 periods without a beat. */
static void test_liveness_periods(void) {
    static struct ivs_bus a, b;
    two_peers(&a, &b, 20);
    CHECK(ivs_bus_find(&a, "bob") != NULL);
    uint32_t *beats = &words(b.g.table_offset + b.self.slot * 256u)[4];
    uint32_t before = *beats;
    sleep_ms(11);
    ivs_bus_tick(&b); /* more than half a period after joining */
    EQ(*beats, before + 1);
    /* bob falls silent after his last beat: alice must not take him for down within 3 periods of it. */
    ivs_bus_tick(&a);
    uint64_t last_beat = ivs_now_ms();
    uint64_t until = last_beat + 5000;
    while (ivs_bus_find(&a, "bob") && ivs_now_ms() < until) {
        ivs_bus_tick(&a);
        sleep_ms(1);
    }
    CHECK(ivs_bus_find(&a, "bob") == NULL);
    CHECK(ivs_now_ms() - last_beat > 60);
    ivs_bus_leave(&a);
    ivs_bus_leave(&b);
}

/* SPEC 3.5 (1.1): the accepted period P: a slot declaring more is no peer, a join declaring more
 * is refused; occupied slots that are not peers are freed once nothing changed for 3 × P. */
static void test_occupied_slots(void) {
    memset(mem, 0, sizeof mem);
    struct ivs_device dev = {.memory = mem, .size = sizeof mem, .id = IVS_NO_DOORBELL};
    static struct ivs_bus a, b;
    a.max_peer_period = 100;
    EQ(ivs_bus_join(&a, &dev, "alice", 200, 0, NULL), IVS_ERR_INVALID);
    a.max_peer_period = 100;
    EQ(ivs_bus_join(&a, &dev, "alice", 20, 0, NULL), IVS_OK);
    EQ(a.max_peer_period, 100);
    EQ(ivs_bus_join(&b, &dev, "slow", 1000, 0, NULL), IVS_OK);
    ivs_bus_tick(&a);
    CHECK(ivs_bus_find(&a, "slow") == NULL);
    ivs_bus_leave(&b);

    /* A peer that died while joining: owner set, state joining, never published. */
    uint32_t *slot = words(a.g.table_offset + 2 * 256u);
    slot[0] = 0x1234;
    slot[1] = 1;
    slot[5] = 20;
    /* While its heartbeat moves, it is left alone however long that lasts. */
    for (int i = 0; i < 40; i++) {
        slot[4]++;
        ivs_bus_tick(&a);
        sleep_ms(10);
    }
    EQ(slot[0], 0x1234);
    uint64_t until = ivs_now_ms() + 5000;
    while (slot[0] != 0 && ivs_now_ms() < until) {
        ivs_bus_tick(&a);
        sleep_ms(5);
    }
    EQ(slot[0], 0);
    /* Garbage in a slot (a state beyond leaving) goes the same way. */
    slot[0] = 0x5678;
    slot[1] = 77;
    until = ivs_now_ms() + 5000;
    while (slot[0] != 0 && ivs_now_ms() < until) {
        ivs_bus_tick(&a);
        sleep_ms(5);
    }
    EQ(slot[0], 0);
    ivs_bus_leave(&a);
}

/* SPEC 3.5: once a peer is down its section may be someone else's: a reader draining its
 * channel keeps its head private and stores no closed word. */
static void test_drain_writes_nothing(void) {
    static struct ivs_bus a, b;
    struct ivs_producer p;
    struct ivs_consumer c;
    connected(&a, &b, "last", &p, &c);
    uint32_t v = 1, len, type;
    EQ(ivs_producer_try_send(&p, &v, 4, 0), IVS_OK);
    EQ(ivs_producer_try_send(&p, &v, 4, 0), IVS_OK);
    ivs_bus_leave(&b);
    ivs_bus_tick(&a);
    CHECK(ivs_bus_find(&a, "bob") == NULL);
    uint32_t *ring = (uint32_t *)c.e.header;
    uint32_t head = ring[W_HEAD_LO];
    EQ(ivs_consumer_try_receive(&c, &v, 4, &len, &type), IVS_OK);
    EQ(ivs_consumer_try_receive(&c, &v, 4, &len, &type), IVS_OK);
    EQ(ivs_consumer_try_receive(&c, &v, 4, &len, &type), IVS_EOF);
    EQ(ring[W_HEAD_LO], head);
    EQ(ring[W_READER_CLOSED], 0);
    ivs_consumer_close(&c);
    EQ(ring[W_READER_CLOSED], 0);
    ivs_bus_leave(&a);
}

/* SPEC 3.3 (1.1): a slot copied while it changed hands is not taken for a peer. Another process
 * hands slot 2 from session to session (never the same twice, as random sessions are), odd
 * sessions named "twotwo", even ones "one"; every peer the observer takes must carry the name
 * of its session. */
static int torn, seen;
static void check_pair(void *ctx, const struct ivs_peer *peer, int reason) {
    (void)ctx;
    if (reason != 0 || peer->slot != 2) return;
    seen++;
    const char *expected = peer->session & 1 ? "twotwo" : "one";
    if (strcmp(peer->name, expected) != 0) torn++;
}

static void test_slot_changing_hands(void) {
    unsigned char *shared = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(shared != MAP_FAILED);
    struct ivs_device dev = {.memory = shared, .size = 1 << 20, .id = IVS_NO_DOORBELL};
    static struct ivs_bus a;
    a.on_peer = check_pair;
    EQ(ivs_bus_join(&a, &dev, "alice", 60000, 0, NULL), IVS_OK);
    uint32_t *slot = (uint32_t *)(shared + a.g.table_offset + 2 * 256u);
    volatile uint32_t *stop = (volatile uint32_t *)(shared + (1 << 20) - 64);
    pid_t child = fork();
    if (child == 0) {
        for (uint32_t n = 2; !*stop; n++) {
            uint32_t session = n;
            const char *name = n & 1 ? "twotwo" : "one";
            st_sc(&slot[0], session);
            st_sc(&slot[1], 1);
            st_relaxed(&slot[5], 1000);
            memset(&slot[8], 0, 64);
            memcpy(&slot[8], name, strlen(name));
            st_relaxed(&slot[7], (uint32_t)strlen(name));
            st_sc(&slot[1], 2);
            st_sc(&slot[24], session);
        }
        _exit(0);
    }
    /* Under load the child may not run for a while: look until it has been seen at least once. */
    for (int i = 0; (i < 300000 || seen == 0) && i < 100000000 && torn == 0; i++) ivs_bus_tick(&a);
    *stop = 1;
    int status;
    waitpid(child, &status, 0);
    CHECK(seen > 0);
    EQ(torn, 0);
    a.on_peer = NULL;
    ivs_bus_leave(&a);
    munmap(shared, 1 << 20);
}

/* ---- SPEC 2.8 (1.1): the closed word is an end's last store ------------------------------- */

/* A reader closed after it stored reader-closed at end of stream writes nothing and rings nobody:
 * the writer's side may already have formatted a new ring at those bytes (first fit). */
static void test_closed_word_is_last(void) {
    struct ivs_producer p, q;
    struct ivs_consumer c;
    struct ivs_doorbell bell = {.ring = count_ring, .fd = -1};
    EQ(ivs_ring_format(mem, 4096, 256, 0), 256);
    EQ(ivs_producer_attach(&p, mem, 4096, NULL), IVS_OK);
    EQ(ivs_consumer_attach(&c, mem, 4096, &bell), IVS_OK);
    uint32_t v = 7, len, type;
    EQ(ivs_producer_try_send(&p, &v, 4, 0), IVS_OK);
    ivs_producer_close(&p);
    EQ(ivs_consumer_try_receive(&c, &v, 4, &len, &type), IVS_OK);
    EQ(ivs_consumer_try_receive(&c, &v, 4, &len, &type), IVS_EOF);
    EQ(ivs_ring_format(mem, 4096, 256, 0), 256); /* the writer's bus reuses the bytes */
    EQ(ivs_producer_attach(&q, mem, 4096, NULL), IVS_OK);
    words(0)[W_PRODUCER_WAIT] = 1; /* the new writer sleeps */
    /* The finished reader reads nothing of the new ring either. */
    EQ(ivs_producer_try_send(&q, &v, 4, 0), IVS_OK);
    EQ(ivs_consumer_try_receive(&c, &v, 4, &len, &type), IVS_EOF);
    EQ(ivs_consumer_available(&c), 0);
    rings = 0;
    ivs_consumer_close(&c);
    EQ(words(0)[W_READER_CLOSED], 0);
    EQ(words(0)[W_HEAD_LO], 0);
    EQ(rings, 0);
    EQ(ivs_producer_try_send(&q, &v, 4, 0), IVS_OK);
}

/* A writer that failed on a corrupt ring writes nothing at close: its bus frees such a ring. */
static void test_corrupt_writer_closes_silently(void) {
    struct ivs_producer p;
    struct ivs_consumer c;
    fresh(256, &p, &c);
    uint32_t v = 7;
    words(0)[W_HEAD_LO] = 12; /* misaligned */
    words(0)[W_TAIL_LO] = 0;
    for (int i = 0; i < 64 && ivs_producer_try_send(&p, &v, 4, 0) == IVS_OK; i++) {
    }
    EQ(p.e.error, IVS_ERR_CORRUPT);
    EQ(ivs_ring_format(mem, 4096, 256, 0), 256);
    ivs_producer_close(&p);
    EQ(words(0)[W_WRITER_CLOSED], 0);
}

/* Once a writer has seen reader-closed it keeps failing, even if the word reads 0 later. */
static void test_writer_latches_reader_closed(void) {
    struct ivs_producer p;
    struct ivs_consumer c;
    fresh(256, &p, &c);
    uint32_t v = 7;
    ivs_consumer_close(&c);
    EQ(ivs_producer_try_send(&p, &v, 4, 0), IVS_ERR_CLOSED);
    words(0)[W_READER_CLOSED] = 0;
    EQ(ivs_producer_try_send(&p, &v, 4, 0), IVS_ERR_CLOSED);
}

/* SPEC 2.7 (1.1): the closing doorbell takes no token and is never held back. */
static void test_closing_doorbell_exempt(void) {
    struct ivs_doorbell bell = {.ring = count_ring, .fd = -1};
    struct ivs_producer p;
    struct ivs_consumer c;
    EQ(ivs_ring_format(mem, 4096, 256, 0), 256);
    EQ(ivs_producer_attach(&p, mem, 4096, &bell), IVS_OK);
    EQ(ivs_consumer_attach(&c, mem, 4096, &bell), IVS_OK);
    p.e.tokens = c.e.tokens = 0;
    p.e.refilled_ns = c.e.refilled_ns = UINT64_MAX; /* no token for a long while */
    words(0)[W_CONSUMER_WAIT] = 1;
    words(0)[W_PRODUCER_WAIT] = 1;
    rings = 0;
    ivs_consumer_close(&c);
    EQ(rings, 1);
    ivs_producer_close(&p);
    EQ(rings, 2);
    EQ(p.e.deferred, 0);
    EQ(c.e.deferred, 0);
}

/* Stores into the watched word, and how many found the ring's reader-closed already set: a
 * hardware write breakpoint signals each store as it happens. */
static volatile sig_atomic_t watched_stores, stores_after_closed;
static uint32_t *watched_ring;
static void on_watched_store(int sig) {
    (void)sig;
    watched_stores++;
    if (__atomic_load_n(&watched_ring[W_READER_CLOSED], __ATOMIC_SEQ_CST) != 0) stores_after_closed++;
}
static int watch_stores(uint32_t *word) {
    struct perf_event_attr a;
    memset(&a, 0, sizeof a);
    a.type = PERF_TYPE_BREAKPOINT;
    a.size = sizeof a;
    a.bp_type = HW_BREAKPOINT_W;
    a.bp_addr = (uintptr_t)word;
    a.bp_len = HW_BREAKPOINT_LEN_4;
    a.sample_period = 1;
    a.wakeup_events = 1;
    a.exclude_kernel = 1;
    a.exclude_hv = 1;
    int fd = (int)syscall(SYS_perf_event_open, &a, 0, -1, -1, 0);
    if (fd < 0) return -1;
    signal(SIGIO, on_watched_store);
    struct f_owner_ex owner = {.type = F_OWNER_TID, .pid = (pid_t)syscall(SYS_gettid)};
    fcntl(fd, F_SETOWN_EX, &owner);
    fcntl(fd, F_SETSIG, SIGIO);
    fcntl(fd, F_SETFL, O_ASYNC);
    return fd;
}

/* The writer closes while the reader announces sleep: the reader's look after announcing finds
 * end of stream. Its wait word goes back to even before reader-closed, never after. */
static struct ivs_producer *closing_writer;
static int close_writer(void *ctx) {
    (void)ctx;
    ivs_producer_close(closing_writer);
    return 0;
}
static void test_sleep_ends_before_closed_word(void) {
    struct ivs_producer p;
    struct ivs_consumer c;
    int efd = eventfd(0, EFD_NONBLOCK);
    struct ivs_doorbell bell = {.ring = close_writer, .fd = efd};
    EQ(ivs_ring_format(mem, 4096, 256, 0), 256);
    EQ(ivs_producer_attach(&p, mem, 4096, NULL), IVS_OK);
    EQ(ivs_consumer_attach(&c, mem, 4096, &bell), IVS_OK);
    closing_writer = &p;
    c.e.spin_ns = 0;
    /* A held-back doorbell of the reader's, sent just before it announces sleep, closes the writer. */
    words(0)[W_PRODUCER_WAIT] = 1;
    c.e.deferred = 1;
    watched_ring = words(0);
    watched_stores = stores_after_closed = 0;
    int fd = watch_stores(&words(0)[W_CONSUMER_WAIT]);
    CHECK(fd >= 0);
    uint32_t v, len, type;
    EQ(ivs_consumer_receive(&c, &v, 4, &len, &type, 5000), IVS_EOF);
    if (fd >= 0) close(fd);
    signal(SIGIO, SIG_DFL);
    EQ(watched_stores, 2); /* announced, then back to even */
    EQ(stores_after_closed, 0);
    EQ(words(0)[W_READER_CLOSED], 1);
    EQ(words(0)[W_CONSUMER_WAIT] & 1u, 0);
    close(efd);
}

/* SPEC 3.4/2.8: leaving does not close a channel read to its end long ago: its bytes may hold the
 * writer's next ring (first fit), which this reader never accepted. */
static void test_leave_skips_finished_channels(void) {
    static struct ivs_bus a, b;
    struct ivs_producer p, q;
    struct ivs_consumer c;
    connected(&a, &b, "old", &p, &c);
    uint32_t v = 1, len, type;
    EQ(ivs_producer_try_send(&p, &v, 4, 0), IVS_OK);
    ivs_producer_close(&p);
    EQ(ivs_consumer_try_receive(&c, &v, 4, &len, &type), IVS_OK);
    EQ(ivs_consumer_try_receive(&c, &v, 4, &len, &type), IVS_EOF);
    EQ(ivs_bus_open(&b, a.self.slot, "new", 0, &q), IVS_OK);
    CHECK(q.e.header == p.e.header); /* first fit: the same bytes */
    ivs_bus_leave(&a);
    EQ(q.e.header[W_READER_CLOSED], 0);
    ivs_bus_leave(&b);
}

/* SPEC 3.7 (1.1): the owner frees a ring when its own writer closed and the reader-closed word
 * is set, not when the shared words say both closed (anyone can set them on a live ring). */
static void test_reclaim_by_own_writer(void) {
    static struct ivs_bus a, b;
    two_peers(&a, &b, 1000);
    ivs_bus_tick(&b);
    struct ivs_producer p, q;
    EQ(ivs_bus_open(&b, a.self.slot, "live", 0, &p), IVS_OK);
    p.e.header[W_WRITER_CLOSED] = 1; /* a scribbler */
    p.e.header[W_READER_CLOSED] = 1;
    EQ(ivs_bus_open(&b, a.self.slot, "next", 0, &q), IVS_OK);
    CHECK(q.e.header != p.e.header);
    ivs_bus_leave(&a);
    ivs_bus_leave(&b);
}

/* A ring freed because its writer failed (here: its reader closed) is detached first: closing
 * that writer later does not write into the ring formatted at the same bytes. */
static void test_reclaim_detaches_writer(void) {
    static struct ivs_bus a, b;
    struct ivs_producer p, q;
    struct ivs_consumer c;
    connected(&a, &b, "one", &p, &c);
    ivs_consumer_close(&c);
    uint32_t v = 1;
    EQ(ivs_producer_try_send(&p, &v, 4, 0), IVS_ERR_CLOSED);
    EQ(ivs_bus_open(&b, a.self.slot, "two", 0, &q), IVS_OK);
    CHECK(q.e.header == p.e.header);
    ivs_producer_close(&p);
    EQ(q.e.header[W_WRITER_CLOSED], 0);
    ivs_bus_leave(&a);
    ivs_bus_leave(&b);
}

int main(void) {
    test_format_and_check();
    test_roundtrip_wrap(0);
    test_roundtrip_wrap(0x100000000ull - 512);
    test_backpressure_and_close();
    test_hostile_producer();
    test_hostile_consumer();
    test_doorbell_suppression();
    test_sleeping_processes();
    test_region();
    test_bus();
    test_hostile_directory();
    test_minor_version();
    test_doorbell_limit();
    test_reader_closed_at_eof();
    test_liveness_periods();
    test_occupied_slots();
    test_drain_writes_nothing();
    test_slot_changing_hands();
    test_closed_word_is_last();
    test_corrupt_writer_closes_silently();
    test_writer_latches_reader_closed();
    test_closing_doorbell_exempt();
    test_sleep_ends_before_closed_word();
    test_leave_skips_finished_channels();
    test_reclaim_by_own_writer();
    test_reclaim_detaches_writer();
    printf("c unit tests: %d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}

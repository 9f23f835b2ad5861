/* SPEC.md "Ring": format, validation, producer, consumer, sleeping and waking. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ivshmem.h"
#include "shared.h"

#define SPIN_NS 20000u     /* busy-wait before sleeping (the Node package's default: 20 µs) */
#define POLL_BUSY_NS 5000000ull /* a polling end yields between looks for 5 ms ... */
#define POLL_MAX_DELAY_NS 4000000ull /* ... then sleeps up to 4 ms between looks */
#define RECHECK_MS 1000    /* a sleeper looks at the ring at least every second (SPEC) */

const char *ivs_strerror(int status) {
    switch (status) {
    case IVS_OK: return "ok";
    case IVS_AGAIN: return "try again (empty or full)";
    case IVS_EOF: return "end of stream";
    case IVS_ERR_CLOSED: return "channel closed";
    case IVS_ERR_CORRUPT: return "channel corrupt";
    case IVS_ERR_TOO_LARGE: return "message too large";
    case IVS_ERR_INVALID: return "invalid argument";
    case IVS_ERR_TIMEOUT: return "timed out";
    case IVS_ERR_BUSY: return "a reservation is open";
    case IVS_ERR_PEER_GONE: return "peer gone";
    case IVS_ERR_REGION: return "not a usable bus region";
    case IVS_ERR_BUS_FULL: return "bus full";
    case IVS_ERR_EVICTED: return "evicted from the bus";
    case IVS_ERR_SIZE: return "memory too small";
    case IVS_ERR_SYSTEM: return "system call failed";
    default: return "unknown status";
    }
}

const char *ivs_field_name(int field) {
    static const char *const names[] = {"none", "magic", "version", "headerSize", "capacity", "flags",
                                        "tail", "head",  "length",  "type",       "padding"};
    return field >= 0 && field <= IVS_FIELD_PADDING ? names[field] : "?";
}

uint64_t ivs_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int is_pow2(uint32_t v) { return v != 0 && (v & (v - 1)) == 0; }

/* ---- Format and validation ----------------------------------------------------------------- */

int64_t ivs_ring_format(void *ring, size_t size, uint32_t capacity, uint64_t position) {
    if (!ring || ((uintptr_t)ring & 7) != 0 || (position & 7) != 0) return IVS_ERR_INVALID;
    if (capacity == 0) {
        if (size < IVS_RING_HEADER_SIZE + IVS_RING_MIN_CAPACITY) return IVS_ERR_SIZE;
        size_t room = size - IVS_RING_HEADER_SIZE;
        capacity = IVS_RING_MAX_CAPACITY;
        while ((size_t)capacity > room) capacity >>= 1;
    }
    if (capacity < IVS_RING_MIN_CAPACITY || capacity > IVS_RING_MAX_CAPACITY || !is_pow2(capacity)) return IVS_ERR_INVALID;
    if (IVS_RING_SIZE(capacity) > size) return IVS_ERR_SIZE;
    uint32_t *w = ring;
    st_sc(&w[W_MAGIC], 0);
    for (unsigned i = 1; i < IVS_RING_HEADER_SIZE / 4; i++) st_relaxed(&w[i], 0);
    st_relaxed(&w[W_VERSION], 1u | 1u << 16); /* major 1, minor 1 */
    st_relaxed(&w[W_HEADER_SIZE], IVS_RING_HEADER_SIZE);
    st_relaxed(&w[W_CAPACITY], capacity);
    st_relaxed(&w[W_TAIL_HI], (uint32_t)(position >> 32));
    st_relaxed(&w[W_TAIL_LO], (uint32_t)position);
    st_relaxed(&w[W_HEAD_HI], (uint32_t)(position >> 32));
    st_relaxed(&w[W_HEAD_LO], (uint32_t)position);
    st_sc(&w[W_MAGIC], IVS_RING_MAGIC);
    return capacity;
}

/* Checks the formatter's line against `expected` capacity (0: any valid one); each word once. */
static int check_header(const uint32_t *w, size_t size, uint32_t expected, uint32_t *capacity) {
    if (ld_sc(&w[W_MAGIC]) != IVS_RING_MAGIC) return IVS_FIELD_MAGIC;
    if ((ld_relaxed(&w[W_VERSION]) & 0xffffu) != 1) return IVS_FIELD_VERSION;
    if (ld_relaxed(&w[W_HEADER_SIZE]) != IVS_RING_HEADER_SIZE) return IVS_FIELD_HEADER_SIZE;
    uint32_t cap = ld_relaxed(&w[W_CAPACITY]);
    if ((expected && cap != expected) || cap < IVS_RING_MIN_CAPACITY || cap > IVS_RING_MAX_CAPACITY || !is_pow2(cap) ||
        IVS_RING_SIZE(cap) > size)
        return IVS_FIELD_CAPACITY;
    if (ld_relaxed(&w[W_FLAGS]) != 0) return IVS_FIELD_FLAGS;
    if (capacity) *capacity = cap;
    return IVS_FIELD_NONE;
}

int ivs_ring_check(const void *ring, size_t size, uint32_t *capacity, int *field) {
    int f = IVS_FIELD_NONE;
    if (!ring || ((uintptr_t)ring & 3) != 0) return IVS_ERR_INVALID;
    if (size < IVS_RING_HEADER_SIZE) f = IVS_FIELD_CAPACITY;
    else f = check_header(ring, size, 0, capacity);
    if (field) *field = f;
    return f == IVS_FIELD_NONE ? IVS_OK : IVS_ERR_CORRUPT;
}

/* ---- Common end state ---------------------------------------------------------------------- */

static int fail(struct ivs_ring_end *e, int status, int field) {
    if (e->error == IVS_OK) {
        e->error = status;
        e->field = field;
    }
    return e->error;
}

void ivs_ring_abandon(struct ivs_ring_end *e, int status) { fail(e, status, IVS_FIELD_NONE); }

static int attach_end(struct ivs_ring_end *e, void *ring, size_t size, const struct ivs_doorbell *bell, int own_wait) {
    memset(e, 0, sizeof *e);
    if (!ring || ((uintptr_t)ring & 7) != 0) return IVS_ERR_INVALID;
    if (size < IVS_RING_HEADER_SIZE) return fail(e, IVS_ERR_CORRUPT, IVS_FIELD_CAPACITY);
    uint32_t capacity = 0;
    int field = check_header(ring, size, 0, &capacity);
    if (field != IVS_FIELD_NONE) return fail(e, IVS_ERR_CORRUPT, field);
    e->header = ring;
    e->data = (unsigned char *)ring + IVS_RING_HEADER_SIZE;
    e->size = size;
    e->capacity = capacity;
    e->mask = capacity - 1;
    e->bell.fd = -1;
    if (bell) e->bell = *bell;
    e->spin_ns = SPIN_NS;
    e->tokens = IVS_DOORBELL_BURST;
    e->own_wait = own_wait;
    /* Our wait word may hold a previous user's value: continue from it, even. */
    e->wait_seq = (ld_relaxed(&e->header[own_wait]) + 1u) & ~1u;
    return IVS_OK;
}

/* Re-validates the formatter's line (slow paths: before sleeping, after waking). */
static int check_live(struct ivs_ring_end *e) {
    if (e->error) return e->error;
    int field = check_header(e->header, e->size, e->capacity, NULL);
    return field == IVS_FIELD_NONE ? IVS_OK : fail(e, IVS_ERR_CORRUPT, field);
}

static int can_ring(const struct ivs_ring_end *e) { return e->bell.ring != NULL; }

/* After the peer went down or we were evicted, the ring's memory may already be another
 * peer's (its section reused, our slot taken): close() then writes nothing shared. */
static int may_write(const struct ivs_ring_end *e) {
    return !e->detached && e->error != IVS_ERR_PEER_GONE && e->error != IVS_ERR_EVICTED;
}
static int can_sleep(const struct ivs_ring_end *e) { return e->bell.ring != NULL && e->bell.fd >= 0 && !e->detached; }

void ivs_ring_detach(struct ivs_ring_end *e) {
    e->detached = 1;
    e->deferred = 0;
}

/* SPEC 2.8 (1.1): the closed word is this end's last store into the ring, as the owner may free
 * the bytes and format another ring there; an announced sleep ends before it. */
static void store_closed(struct ivs_ring_end *e, int word) {
    if (e->wait_seq & 1u) {
        e->wait_seq += 1;
        st_sc(&e->header[e->own_wait], e->wait_seq);
    }
    st_sc(&e->header[word], 1);
    e->closed_stored = 1;
}

/* Takes a doorbell token (SPEC 2.7); the clock is read only when the bucket runs dry. */
static int take_token(struct ivs_ring_end *e) {
    if (e->tokens == 0) {
        uint64_t now = now_ns();
        uint64_t earned = now > e->refilled_ns ? (now - e->refilled_ns) / IVS_DOORBELL_EVERY_NS : 0;
        if (earned == 0) return 0;
        if (earned >= IVS_DOORBELL_BURST) {
            e->tokens = IVS_DOORBELL_BURST;
            e->refilled_ns = now;
        } else {
            e->tokens = (uint32_t)earned;
            e->refilled_ns += earned * IVS_DOORBELL_EVERY_NS; /* keep the fraction of a token */
        }
    }
    if (e->tokens-- == IVS_DOORBELL_BURST) e->refilled_ns = now_ns();
    return 1;
}

/* After a publish: ring the other end if it announced sleep (an odd wait word) since we last
 * rang it, within the rate limit (SPEC 2.5 step 5, 2.7). `closing`: the closing doorbell rings
 * a sleeper even if already rung, takes no token and is never held back: one per end cannot
 * flood, and a held-back one would ring after the bytes may belong to another ring. */
static void wake(struct ivs_ring_end *e, int peer_wait, int closing) {
    if (!can_ring(e) || e->detached) return;
    uint32_t seq = ld_sc(&e->header[peer_wait]);
    if (!(seq & 1u) || (!closing && e->rang_once && seq == e->rung)) return;
    if (!closing && !take_token(e)) {
        /* Held back, not dropped: looked at again once a token is there. */
        e->deferred = 1;
        return;
    }
    e->rung = seq;
    e->rang_once = 1;
    e->bell.ring(e->bell.ctx);
}

static int peer_wait_word(const struct ivs_ring_end *e) {
    return e->own_wait == W_PRODUCER_WAIT ? W_CONSUMER_WAIT : W_PRODUCER_WAIT;
}

int ivs_ring_doorbells(struct ivs_ring_end *e) {
    if (!e->deferred) return 0;
    if (e->error || e->detached) {
        e->deferred = 0;
        return 0;
    }
    e->deferred = 0;
    wake(e, peer_wait_word(e), 0);
    return e->deferred;
}

/*
 * Waits until `ready` says 1 (or fails): spins for the budget, then either announces sleep in
 * our wait word, looks once more and sleeps on the doorbell fd (SPEC "Sleeping and waking"),
 * or, for a polling end, looks at growing intervals. Returns IVS_OK, an error or IVS_ERR_TIMEOUT.
 */
typedef int (*ready_fn)(void *arg);

static int wait_until(struct ivs_ring_end *e, int own_wait, ready_fn ready, void *arg, int timeout_ms) {
    uint64_t start = now_ns();
    uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : start + (uint64_t)timeout_ms * 1000000u;
    int r;
    if ((r = ready(arg)) != 0) return r < 0 ? r : IVS_OK;
    /* The spin adapts as the Node ends' does: one that keeps failing shrinks (down to 1/16), one
     * that succeeds grows back. A spin that cannot succeed (the peer shares our CPU) only delays
     * the peer. */
    if (e->spin_budget > e->spin_ns || e->spin_budget == 0) e->spin_budget = e->spin_ns;
    for (unsigned i = 1; e->spin_ns > 0; i++) {
        if ((r = ready(arg)) != 0) {
            e->spin_budget = e->spin_budget * 2 > e->spin_ns ? e->spin_ns : e->spin_budget * 2;
            return r < 0 ? r : IVS_OK;
        }
        if ((i & 63) == 0 && now_ns() - start > e->spin_budget) {
            e->spin_budget = e->spin_budget / 2 < e->spin_ns / 16 ? e->spin_ns / 16 : e->spin_budget / 2;
            break;
        }
    }
    for (;;) {
        if ((r = check_live(e)) != IVS_OK) return r;
        ivs_ring_doorbells(e);
        uint64_t now = now_ns();
        if (now >= deadline) return IVS_ERR_TIMEOUT;
        if (can_sleep(e)) {
            e->wait_seq += 1; /* odd: "I am asleep, ring me" */
            st_sc(&e->header[own_wait], e->wait_seq);
            r = ready(arg);
            if (r == 0) {
                uint64_t left_ms = (deadline - now) / 1000000u + 1;
                struct pollfd pfd = {.fd = e->bell.fd, .events = POLLIN};
                int ms = left_ms > RECHECK_MS ? RECHECK_MS : (int)left_ms;
                if (e->deferred) ms = 1; /* a held-back doorbell goes out within 1 ms (SPEC 2.7) */
                if (poll(&pfd, 1, ms) > 0 && (pfd.revents & POLLIN)) {
                    uint64_t count;
                    ssize_t n = read(e->bell.fd, &count, sizeof count);
                    (void)n; /* any outcome: we look at the ring again */
                }
            }
            /* Even again, unless the look found the end and put it back before the closed word
             * (nothing is stored after it), or the ring may be another's now. */
            if (e->wait_seq & 1u) {
                e->wait_seq += 1;
                if (!e->closed_stored && !e->detached) st_sc(&e->header[own_wait], e->wait_seq);
            }
            if (r != 0) return r < 0 ? r : IVS_OK;
        } else {
            uint64_t idle = now - start;
            if (idle < POLL_BUSY_NS) {
                sched_yield();
            } else {
                uint64_t delay = idle / 8 > POLL_MAX_DELAY_NS ? POLL_MAX_DELAY_NS : idle / 8;
                struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)delay};
                nanosleep(&ts, NULL);
            }
        }
        if ((r = ready(arg)) != 0) return r < 0 ? r : IVS_OK;
    }
}

/* ---- Producer ------------------------------------------------------------------------------ */

int ivs_producer_attach(struct ivs_producer *p, void *ring, size_t size, const struct ivs_doorbell *bell) {
    memset(p, 0, sizeof *p);
    p->claim = -1;
    int r = attach_end(&p->e, ring, size, bell, W_PRODUCER_WAIT);
    if (r != IVS_OK) return r;
    uint32_t *w = p->e.header;
    p->tail_lo = ld_relaxed(&w[W_TAIL_LO]);
    p->tail_hi = ld_relaxed(&w[W_TAIL_HI]);
    p->published = p->tail_lo;
    uint32_t head = ld_sc(&w[W_HEAD_LO]);
    if (p->tail_lo & 7u) return fail(&p->e, IVS_ERR_CORRUPT, IVS_FIELD_TAIL);
    if ((head & 7u) || p->tail_lo - head > p->e.capacity) return fail(&p->e, IVS_ERR_CORRUPT, IVS_FIELD_HEAD);
    p->head_lo = head;
    if (ld_sc(&w[W_WRITER_CLOSED]) != 0) return fail(&p->e, IVS_ERR_CLOSED, IVS_FIELD_NONE);
    return IVS_OK;
}

static int producer_usable(struct ivs_producer *p) {
    if (p->e.error) return p->e.error;
    if (p->e.closed) return IVS_ERR_CLOSED;
    if (p->claim >= 0) return IVS_ERR_BUSY;
    /* Sequentially consistent: inside a sleep loop this is the look after announcing (SPEC 2.2).
     * Latched: a word that reads 0 later was reset by a peer or belongs to another ring. */
    if (ld_sc(&p->e.header[W_READER_CLOSED]) != 0) return fail(&p->e, IVS_ERR_CLOSED, IVS_FIELD_NONE);
    return IVS_OK;
}

/* Loads and validates the consumer's head; returns the bytes in use, or a negative status. */
static int64_t refresh_head(struct ivs_producer *p) {
    uint32_t head = ld_sc(&p->e.header[W_HEAD_LO]);
    uint32_t used = p->tail_lo - head;
    if (used > p->e.capacity || head - p->head_lo > p->tail_lo - p->head_lo || (head & 7u))
        return fail(&p->e, IVS_ERR_CORRUPT, IVS_FIELD_HEAD);
    p->head_lo = head;
    return used;
}

static void write_header(struct ivs_producer *p, uint32_t at, uint32_t length, uint32_t type) {
    uint32_t *w = (uint32_t *)(p->e.data + at);
    st_relaxed(&w[0], length);
    st_relaxed(&w[1], type);
}

static void publish(struct ivs_producer *p) {
    uint32_t *w = p->e.header;
    /* High word first: an observer reading low then high never sees an old high with a wrapped low. */
    if (ld_relaxed(&w[W_TAIL_HI]) != p->tail_hi) st_sc(&w[W_TAIL_HI], p->tail_hi);
    st_sc(&w[W_TAIL_LO], p->tail_lo);
    p->published = p->tail_lo;
}

static void advance_tail(struct ivs_producer *p, uint32_t bytes) {
    uint32_t lo = p->tail_lo + bytes;
    if (lo < p->tail_lo) p->tail_hi++;
    p->tail_lo = lo;
}

int ivs_producer_flush(struct ivs_producer *p) {
    if (p->e.error) return p->e.error;
    if (p->tail_lo != p->published) publish(p);
    wake(&p->e, W_CONSUMER_WAIT, 0);
    return IVS_OK;
}

int ivs_producer_reserve(struct ivs_producer *p, uint32_t size, void **payload) {
    int r = producer_usable(p);
    if (r != IVS_OK) return r;
    if (size > p->e.capacity - 8) return IVS_ERR_TOO_LARGE;
    uint32_t capacity = p->e.capacity;
    uint32_t stride = IVS_RECORD_STRIDE(size);
    uint32_t at = p->tail_lo & p->e.mask;
    uint32_t contiguous = capacity - at;
    uint32_t need = stride <= contiguous ? stride : contiguous + stride;
    if (need > capacity - (p->tail_lo - p->head_lo)) {
        int64_t used = refresh_head(p);
        if (used < 0) return (int)used;
        uint32_t free_bytes = capacity - (uint32_t)used;
        if (need > free_bytes) {
            if (stride > contiguous && contiguous <= free_bytes) {
                /* The consumer must take the padding before the record fits: publish it alone. */
                write_header(p, at, contiguous - 8, IVS_RECORD_TYPE_PADDING);
                advance_tail(p, contiguous);
                ivs_producer_flush(p);
            }
            return IVS_AGAIN;
        }
    }
    if (stride <= contiguous) {
        p->pad = 0;
        p->claim = at;
    } else {
        write_header(p, at, contiguous - 8, IVS_RECORD_TYPE_PADDING);
        p->pad = contiguous;
        p->claim = 0;
    }
    p->claim_size = size;
    *payload = p->e.data + p->claim + 8;
    return IVS_OK;
}

int ivs_producer_put(struct ivs_producer *p, uint32_t length, uint32_t type) {
    if (p->claim < 0 || length > p->claim_size || type > IVS_RECORD_TYPE_MAX) return IVS_ERR_INVALID;
    uint32_t at = (uint32_t)p->claim;
    p->claim = -1;
    int r = producer_usable(p);
    if (r != IVS_OK) return r;
    write_header(p, at, length, type);
    advance_tail(p, p->pad + IVS_RECORD_STRIDE(length));
    p->pad = 0;
    return IVS_OK;
}

int ivs_producer_commit(struct ivs_producer *p, uint32_t length, uint32_t type) {
    int r = ivs_producer_put(p, length, type);
    return r != IVS_OK ? r : ivs_producer_flush(p);
}

void ivs_producer_abandon(struct ivs_producer *p) { p->claim = -1; }

int ivs_producer_try_send(struct ivs_producer *p, const void *data, uint32_t length, uint32_t type) {
    void *payload;
    if (type > IVS_RECORD_TYPE_MAX) return IVS_ERR_INVALID;
    int r = ivs_producer_reserve(p, length, &payload);
    if (r != IVS_OK) return r;
    if (length) memcpy(payload, data, length);
    return ivs_producer_commit(p, length, type);
}

struct send_args {
    struct ivs_producer *p;
    const void *data;
    uint32_t length, type;
};

static int send_ready(void *arg) {
    struct send_args *a = arg;
    int r = ivs_producer_try_send(a->p, a->data, a->length, a->type);
    return r == IVS_AGAIN ? 0 : r == IVS_OK ? 1 : r;
}

int ivs_producer_send(struct ivs_producer *p, const void *data, uint32_t length, uint32_t type, int timeout_ms) {
    struct send_args a = {p, data, length, type};
    int r = send_ready(&a);
    if (r != 0) return r < 0 ? r : IVS_OK;
    return wait_until(&p->e, W_PRODUCER_WAIT, send_ready, &a, timeout_ms);
}

uint32_t ivs_producer_free(struct ivs_producer *p) {
    if (p->e.error) return 0;
    int64_t used = refresh_head(p);
    return used < 0 ? 0 : p->e.capacity - (uint32_t)used;
}

void ivs_producer_close(struct ivs_producer *p) {
    if (p->e.closed || !p->e.header) return;
    p->claim = -1;
    if (p->e.error == IVS_OK && !p->e.detached && p->tail_lo != p->published) publish(p);
    p->e.closed = 1;
    /* Our bus frees a ring whose writer failed (a corrupt one too): it may be another's now. */
    if (may_write(&p->e) && p->e.error != IVS_ERR_CORRUPT) {
        store_closed(&p->e, W_WRITER_CLOSED);
        wake(&p->e, W_CONSUMER_WAIT, 1);
    }
    ivs_ring_detach(&p->e);
}

/* ---- Consumer ------------------------------------------------------------------------------ */

int ivs_consumer_attach(struct ivs_consumer *c, void *ring, size_t size, const struct ivs_doorbell *bell) {
    memset(c, 0, sizeof *c);
    c->at = -1;
    int r = attach_end(&c->e, ring, size, bell, W_CONSUMER_WAIT);
    if (r != IVS_OK) return r;
    uint32_t *w = c->e.header;
    c->head_lo = ld_relaxed(&w[W_HEAD_LO]);
    c->head_hi = ld_relaxed(&w[W_HEAD_HI]);
    c->published = c->head_lo;
    if (c->head_lo & 7u) return fail(&c->e, IVS_ERR_CORRUPT, IVS_FIELD_HEAD);
    uint32_t tail = ld_sc(&w[W_TAIL_LO]);
    if ((tail & 7u) || tail - c->head_lo > c->e.capacity) return fail(&c->e, IVS_ERR_CORRUPT, IVS_FIELD_TAIL);
    c->tail_lo = tail;
    if (ld_sc(&w[W_READER_CLOSED]) != 0) return fail(&c->e, IVS_ERR_CLOSED, IVS_FIELD_NONE);
    return IVS_OK;
}

/* Acquire: loads the tail and validates it against the head and the last tail seen. */
static int refresh_tail(struct ivs_consumer *c) {
    uint32_t tail = ld_sc(&c->e.header[W_TAIL_LO]);
    if (tail != c->tail_lo) {
        if (tail - c->head_lo > c->e.capacity || (tail & 7u)) return fail(&c->e, IVS_ERR_CORRUPT, IVS_FIELD_TAIL);
        /* Backwards: an honest producer's tail only grows, by at most the capacity. */
        if (tail - c->tail_lo > c->e.capacity) return fail(&c->e, IVS_ERR_CORRUPT, IVS_FIELD_TAIL);
        c->tail_lo = tail;
    }
    return IVS_OK;
}

static void advance_head(struct ivs_consumer *c, uint32_t bytes) {
    uint32_t lo = c->head_lo + bytes;
    if (lo < c->head_lo) c->head_hi++;
    c->head_lo = lo;
}

/* Release: stores the head (high word first), then rings the producer if it waits for space. */
static void consumer_flush(struct ivs_consumer *c) {
    if (c->head_lo == c->published || c->e.detached) return; /* detached: the head stays private (SPEC 3.5) */
    uint32_t *w = c->e.header;
    if (ld_relaxed(&w[W_HEAD_HI]) != c->head_hi) st_sc(&w[W_HEAD_HI], c->head_hi);
    st_sc(&w[W_HEAD_LO], c->head_lo);
    c->published = c->head_lo;
    wake(&c->e, W_PRODUCER_WAIT, 0);
}

static int consumer_usable(struct ivs_consumer *c) {
    if (c->e.error) return c->e.error;
    if (c->e.closed) return IVS_ERR_CLOSED;
    return IVS_OK;
}

/* Finds the next record: IVS_OK with c->at/length/type/stride, IVS_AGAIN, or an error.
 * Padding is skipped (released with the next record). Each shared word is read once. */
static int next_record(struct ivs_consumer *c) {
    uint32_t capacity = c->e.capacity;
    if (c->at >= 0) return IVS_OK; /* already found by peek, not yet released */
    for (;;) {
        uint32_t available = c->tail_lo - c->head_lo;
        if (available == 0) {
            int r = refresh_tail(c);
            if (r != IVS_OK) return r;
            available = c->tail_lo - c->head_lo;
            if (available == 0) {
                consumer_flush(c); /* padding skipped on the way is space the producer may wait for */
                return IVS_AGAIN;
            }
        }
        uint32_t at = c->head_lo & c->e.mask;
        const uint32_t *h = (const uint32_t *)(c->e.data + at);
        uint32_t length = ld_relaxed(&h[0]);
        uint32_t type = ld_relaxed(&h[1]);
        uint32_t contiguous = capacity - at;
        if (type == IVS_RECORD_TYPE_PADDING) {
            /* Every record fits at index 0: padding there is never needed, and could hold us in this loop. */
            if (at == 0 || length != contiguous - 8 || contiguous > available)
                return fail(&c->e, IVS_ERR_CORRUPT, IVS_FIELD_PADDING);
            advance_head(c, contiguous);
            continue;
        }
        if (type > IVS_RECORD_TYPE_MAX) return fail(&c->e, IVS_ERR_CORRUPT, IVS_FIELD_TYPE);
        if (length > capacity - 8) return fail(&c->e, IVS_ERR_CORRUPT, IVS_FIELD_LENGTH);
        uint32_t stride = IVS_RECORD_STRIDE(length);
        if (stride > contiguous || stride > available) return fail(&c->e, IVS_ERR_CORRUPT, IVS_FIELD_LENGTH);
        c->at = at;
        c->length = length;
        c->type = type;
        c->stride = stride;
        return IVS_OK;
    }
}

/* The producer cannot rewrite published records: a changed header means a peer scribbled. */
static int verify(struct ivs_consumer *c) {
    const uint32_t *h = (const uint32_t *)(c->e.data + c->at);
    if (ld_relaxed(&h[0]) != c->length || ld_relaxed(&h[1]) != c->type) return fail(&c->e, IVS_ERR_CORRUPT, IVS_FIELD_LENGTH);
    return IVS_OK;
}

static int eof(struct ivs_consumer *c) {
    if (ld_sc(&c->e.header[W_WRITER_CLOSED]) == 0) return 0;
    int r = refresh_tail(c);
    if (r != IVS_OK) return r;
    if (c->tail_lo != c->head_lo) return 0;
    /* SPEC 2.8 (1.1): the ring is finished on both sides; the writer's bus may reuse its space. */
    if (may_write(&c->e)) {
        consumer_flush(c);
        store_closed(&c->e, W_READER_CLOSED);
    }
    /* Finished: nothing more is loaded from or stored into the ring (its bytes may be reused). */
    ivs_ring_detach(&c->e);
    c->e.eof_stored = 1;
    return 1;
}

int ivs_consumer_peek(struct ivs_consumer *c, const void **payload, uint32_t *length, uint32_t *type) {
    int r = consumer_usable(c);
    if (r != IVS_OK) return r;
    if (c->e.eof_stored) return IVS_EOF;
    r = next_record(c);
    if (r == IVS_AGAIN) {
        int e = eof(c);
        return e < 0 ? e : e ? IVS_EOF : IVS_AGAIN;
    }
    if (r != IVS_OK) return r;
    if (payload) *payload = c->e.data + c->at + 8;
    if (length) *length = c->length;
    if (type) *type = c->type;
    return IVS_OK;
}

int ivs_consumer_release(struct ivs_consumer *c) {
    if (c->at < 0) return IVS_ERR_INVALID;
    int r = c->e.error ? c->e.error : verify(c);
    if (r == IVS_OK) r = refresh_tail(c); /* a tail moved back over the record fails here */
    c->at = -1;
    if (r != IVS_OK) return r;
    advance_head(c, c->stride);
    consumer_flush(c);
    return IVS_OK;
}

int ivs_consumer_try_receive(struct ivs_consumer *c, void *buffer, uint32_t buffer_size, uint32_t *length, uint32_t *type) {
    const void *payload;
    uint32_t len, typ;
    int r = ivs_consumer_peek(c, &payload, &len, &typ);
    if (r != IVS_OK) return r;
    if (length) *length = len;
    if (len > buffer_size) return IVS_ERR_TOO_LARGE;
    if (len) memcpy(buffer, payload, len);
    r = ivs_consumer_release(c);
    if (r != IVS_OK) return r;
    if (type) *type = typ;
    return IVS_OK;
}

static int receive_ready(void *arg) {
    struct ivs_consumer *c = arg;
    int r = ivs_consumer_peek(c, NULL, NULL, NULL);
    return r == IVS_AGAIN ? 0 : r == IVS_OK || r == IVS_EOF ? 1 : r;
}

int ivs_consumer_wait(struct ivs_consumer *c, int timeout_ms) {
    int r = ivs_consumer_peek(c, NULL, NULL, NULL);
    if (r != IVS_AGAIN) return r;
    r = wait_until(&c->e, W_CONSUMER_WAIT, receive_ready, c, timeout_ms);
    if (r != IVS_OK) return r;
    return ivs_consumer_peek(c, NULL, NULL, NULL);
}

int ivs_consumer_receive(struct ivs_consumer *c, void *buffer, uint32_t buffer_size, uint32_t *length, uint32_t *type, int timeout_ms) {
    int r = ivs_consumer_wait(c, timeout_ms);
    if (r != IVS_OK) return r;
    return ivs_consumer_try_receive(c, buffer, buffer_size, length, type);
}

uint32_t ivs_consumer_available(struct ivs_consumer *c) {
    if (c->e.error || c->e.eof_stored || refresh_tail(c) != IVS_OK) return 0;
    return c->tail_lo - c->head_lo;
}

void ivs_consumer_close(struct ivs_consumer *c) {
    if (c->e.closed || !c->e.header) return;
    c->e.closed = 1;
    c->at = -1;
    if (may_write(&c->e)) { /* not after end of stream: the end is detached then */
        consumer_flush(c);
        store_closed(&c->e, W_READER_CLOSED);
        wake(&c->e, W_PRODUCER_WAIT, 1);
    }
    ivs_ring_detach(&c->e);
}

/*
 * ivshmem rings and bus regions in C: the shared-memory formats of SPEC.md (Ring 1.1, Region
 * 1.1), interoperable with the Node.js package and anything else that follows SPEC.md.
 *
 * The library never opens devices: the caller maps the memory and hands in a pointer and size,
 * a function that rings a peer and, optionally, one fd per interrupt vector to sleep on
 * (an eventfd). c/glue/ has that glue for a plain file and for a guest's VFIO device.
 *
 * Shared memory is written by peers we do not trust: every word read from it is copied once,
 * checked, and only the copy is used. A peer breaking the rules fails the channel with
 * IVS_ERR_CORRUPT and names the field (ivs_ring_field()); nothing outside the ring is read or
 * written. Not thread-safe: one thread per ring end and per bus.
 */
#ifndef IVSHMEM_H
#define IVSHMEM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Results ---------------------------------------------------------------------------- */

enum ivs_status {
    IVS_OK = 0,
    IVS_AGAIN = 1,             /* nothing to read / no room yet: try again later */
    IVS_EOF = 2,               /* the writer closed and every record was received */
    IVS_ERR_CLOSED = -1,       /* the other end (or this one) closed the channel */
    IVS_ERR_CORRUPT = -2,      /* a peer broke the format; see ivs_ring_field() */
    IVS_ERR_TOO_LARGE = -3,    /* the message does not fit in the ring / the caller's buffer */
    IVS_ERR_INVALID = -4,      /* a bad argument */
    IVS_ERR_TIMEOUT = -5,      /* a wait ran out */
    IVS_ERR_BUSY = -6,         /* a reservation is open: commit or abandon it first */
    IVS_ERR_PEER_GONE = -7,    /* the peer at the other end of the channel is down */
    IVS_ERR_REGION = -8,       /* the region is not a usable bus region (foreign, corrupt, version) */
    IVS_ERR_BUS_FULL = -9,     /* no free peer slot, directory entry or ring space */
    IVS_ERR_EVICTED = -10,     /* another peer freed our slot: we stop writing to the region */
    IVS_ERR_SIZE = -11,        /* the memory is too small for what was asked */
    IVS_ERR_SYSTEM = -12,      /* a system call failed (errno tells) */
};

/* Shared fields a corrupt ring can be blamed on (SPEC "Validation"). */
enum ivs_ring_field {
    IVS_FIELD_NONE = 0,
    IVS_FIELD_MAGIC,
    IVS_FIELD_VERSION,
    IVS_FIELD_HEADER_SIZE,
    IVS_FIELD_CAPACITY,
    IVS_FIELD_FLAGS,
    IVS_FIELD_TAIL,
    IVS_FIELD_HEAD,
    IVS_FIELD_LENGTH,
    IVS_FIELD_TYPE,
    IVS_FIELD_PADDING,
};

const char *ivs_strerror(int status);
/* The field's name as SPEC.md and the Node package spell it ("tail", "length", ...). */
const char *ivs_field_name(int field);

/* ---- Ring format (SPEC "Ring") ------------------------------------------------------------ */

#define IVS_RING_MAGIC 0x47525649u /* "IVRG" */
#define IVS_RING_HEADER_SIZE 640u
#define IVS_RING_MIN_CAPACITY 64u
#define IVS_RING_MAX_CAPACITY (1u << 30)
#define IVS_RECORD_HEADER_SIZE 8u
#define IVS_RECORD_TYPE_MAX 0xffffu
#define IVS_RECORD_TYPE_PADDING 0xffffffffu

/* Bytes a ring with a `capacity`-byte data area occupies. */
#define IVS_RING_SIZE(capacity) ((size_t)IVS_RING_HEADER_SIZE + (size_t)(capacity))
/* Bytes one record with a `length`-byte payload takes in the data area. */
#define IVS_RECORD_STRIDE(length) (8u + (((uint32_t)(length) + 7u) & ~7u))

/*
 * Writes an empty ring at `ring` (8-aligned, `size` bytes available): capacity `capacity`
 * (0: the largest power of two that fits), head = tail = `position` (a multiple of 8), the magic
 * last. Exactly one end formats, before the other attaches. Returns the capacity, or a negative
 * ivs_status.
 */
int64_t ivs_ring_format(void *ring, size_t size, uint32_t capacity, uint64_t position);

/* Validates a ring header (read once); IVS_OK and the capacity, or IVS_ERR_CORRUPT and the field. */
int ivs_ring_check(const void *ring, size_t size, uint32_t *capacity, int *field);

/* ---- Waking and sleeping ------------------------------------------------------------------- */

/*
 * How a ring end wakes the other end and sleeps. With `ring` NULL or `fd` < 0 the end polls:
 * it never announces sleep and never rings (SPEC "A peer that has no doorbell ... polls").
 * `fd` becomes readable when the peer rings us (an eventfd; it is read to reset it).
 */
struct ivs_doorbell {
    int (*ring)(void *ctx);
    void *ctx;
    int fd;
};

/* ---- Ring ends ----------------------------------------------------------------------------- */

/* State common to both ends; treat as opaque. */
struct ivs_ring_end {
    uint32_t *header;            /* the ring's first word */
    unsigned char *data;         /* its data area */
    size_t size;                 /* bytes the ring may use */
    uint32_t capacity, mask;
    int error;                   /* first failure (sticky), IVS_OK while usable */
    int field;                   /* the corrupt field with IVS_ERR_CORRUPT */
    int closed;                  /* this end called close */
    struct ivs_doorbell bell;
    uint32_t wait_seq;           /* our wait word's value */
    uint32_t rung;               /* the peer's wait word value last rung for */
    int rang_once;
    uint32_t spin_ns;            /* busy-wait before sleeping, at most (0: never spin) */
    uint32_t spin_budget;        /* the adaptive part of it */
    int own_wait;                /* word index of our wait word */
    int detached;                /* the ring's memory may be another's: write nothing shared */
    /* SPEC 2.7: a token bucket bounds our doorbells; one over the limit is held back, not dropped */
    uint32_t tokens;
    uint64_t refilled_ns;
    int deferred;
    int closed_stored;           /* our closed word is stored: nothing more is (SPEC 2.8) */
    int eof_stored;              /* consumer: end of stream seen; finished, detached (SPEC 2.8) */
};

#define IVS_DOORBELL_BURST 64u        /* SPEC 2.7: doorbells a ring end may send at once ... */
#define IVS_DOORBELL_EVERY_NS 20000u  /* ... then one per 20 µs */

struct ivs_producer {
    struct ivs_ring_end e;
    uint32_t tail_lo, tail_hi;   /* authoritative: only we write the tail */
    uint32_t published;          /* tail low word as last stored */
    uint32_t head_lo;            /* last validated head */
    uint32_t pad;                /* padding bytes before the open reservation */
    int64_t claim;               /* data index of the open reservation, or -1 */
    uint32_t claim_size;
};

struct ivs_consumer {
    struct ivs_ring_end e;
    uint32_t head_lo, head_hi;   /* authoritative: only we write the head */
    uint32_t published;          /* head low word as last stored */
    uint32_t tail_lo;            /* last validated tail */
    /* the record found by ivs_consumer_peek */
    int64_t at;
    uint32_t length, type, stride;
};

/*
 * Attaches as the producer / consumer of the ring at `ring` (validated once). `bell` may be
 * NULL (polling). The ring must have been formatted (ivs_ring_format) by one of the ends.
 */
int ivs_producer_attach(struct ivs_producer *p, void *ring, size_t size, const struct ivs_doorbell *bell);
int ivs_consumer_attach(struct ivs_consumer *c, void *ring, size_t size, const struct ivs_doorbell *bell);

/* The largest payload the ring carries (capacity - 8). */
static inline uint32_t ivs_max_message(const struct ivs_ring_end *e) { return e->capacity - 8; }
/* The ring end's failure (IVS_OK if none) and, for IVS_ERR_CORRUPT, the field. */
static inline int ivs_ring_error(const struct ivs_ring_end *e) { return e->error; }
static inline int ivs_ring_field(const struct ivs_ring_end *e) { return e->field; }

/*
 * Producer. reserve: room for up to `size` payload bytes; *payload points into the ring (fill
 * it, then commit or abandon). IVS_AGAIN while the ring is full. commit writes the record with
 * its first `length` bytes and publishes it (release store of the tail, then rings the consumer
 * if it sleeps); put does the same without publishing, and flush publishes everything put.
 */
int ivs_producer_reserve(struct ivs_producer *p, uint32_t size, void **payload);
int ivs_producer_commit(struct ivs_producer *p, uint32_t length, uint32_t type);
int ivs_producer_put(struct ivs_producer *p, uint32_t length, uint32_t type);
void ivs_producer_abandon(struct ivs_producer *p);
int ivs_producer_flush(struct ivs_producer *p);
/* reserve + copy + commit: IVS_OK, IVS_AGAIN (full), or an error. */
int ivs_producer_try_send(struct ivs_producer *p, const void *data, uint32_t length, uint32_t type);
/* Waits for room (up to timeout_ms; < 0: forever), sleeping on the doorbell or polling. */
int ivs_producer_send(struct ivs_producer *p, const void *data, uint32_t length, uint32_t type, int timeout_ms);
/* Bytes free right now. */
uint32_t ivs_producer_free(struct ivs_producer *p);
/* Ends the stream: the consumer sees EOF after the records already sent. Rings a sleeping
 * consumer at once (the closing doorbell takes no token); stores nothing into the ring after.
 * Idempotent. */
void ivs_producer_close(struct ivs_producer *p);

/*
 * Consumer. peek: the next record in place (zero-copy; valid until release), IVS_AGAIN when
 * empty, IVS_EOF at end of stream. release checks that the record header did not change while
 * it was read, consumes the record and hands its space back.
 * try_receive copies the payload into `buffer` (IVS_ERR_TOO_LARGE with *length set, record
 * kept, when it does not fit) and then checks header and tail before returning it.
 */
int ivs_consumer_peek(struct ivs_consumer *c, const void **payload, uint32_t *length, uint32_t *type);
int ivs_consumer_release(struct ivs_consumer *c);
int ivs_consumer_try_receive(struct ivs_consumer *c, void *buffer, uint32_t buffer_size, uint32_t *length, uint32_t *type);
int ivs_consumer_receive(struct ivs_consumer *c, void *buffer, uint32_t buffer_size, uint32_t *length, uint32_t *type, int timeout_ms);
/* Waits until a record is there (IVS_OK), EOF (IVS_EOF), an error, or the timeout. */
int ivs_consumer_wait(struct ivs_consumer *c, int timeout_ms);
/* Bytes of records (with headers and padding) waiting. */
uint32_t ivs_consumer_available(struct ivs_consumer *c);
/* Stops reading: the producer's sends fail from now on, and a sleeping producer is rung at once.
 * After EOF the end is finished (reader-closed stored, the ring's bytes may be reused): close
 * writes nothing then. Idempotent. */
void ivs_consumer_close(struct ivs_consumer *c);

/* Fails the end locally with `status` (the bus does, when the peer is gone). First error wins. */
void ivs_ring_abandon(struct ivs_ring_end *e, int status);
/*
 * Stops the end from writing anything shared (head, closed word, wait word, doorbells) while it
 * may still read: the bus does this when the peer went down, since its section may get a new
 * owner (SPEC 3.5). A detached consumer keeps its head private and polls.
 */
void ivs_ring_detach(struct ivs_ring_end *e);
/*
 * Sends a doorbell the rate limit held back (SPEC 2.7) if a token is available now. Returns 1
 * while one is still held back. The blocking calls and ivs_bus_tick do this; an application
 * that publishes and then goes idle in its own loop calls it until it returns 0 (a held-back
 * doorbell otherwise waits for the sleeper's own re-check, up to a second).
 */
int ivs_ring_doorbells(struct ivs_ring_end *e);

/* ---- Region / bus (SPEC "Region") --------------------------------------------------------- */

#define IVS_REGION_MAGIC 0x42535649u  /* "IVSB" */
#define IVS_REGION_READY 0x59444552u  /* "REDY" */
#define IVS_NAME_MAX 64u
#define IVS_NO_DOORBELL 0xffffffffu
#define IVS_PROFILE_PAIRWISE 1u
#define IVS_PROFILE_SHARED 2u
#define IVS_MAX_PEERS 1024u

/* The device under a bus: mapped memory, our ivshmem ID and doorbells (all optional). */
struct ivs_device {
    void *memory;
    uint64_t size;
    uint32_t id;          /* ivshmem peer ID, or IVS_NO_DOORBELL */
    uint32_t vectors;     /* interrupt vectors we can be woken on (0: we poll) */
    const int *fds;       /* one fd per vector (readable when rung), or NULL */
    int (*ring)(void *ctx, uint32_t peer, uint32_t vector); /* NULL: no doorbells */
    void *ctx;
};

struct ivs_region_format {
    uint32_t profile;     /* IVS_PROFILE_SHARED (default with 0) or IVS_PROFILE_PAIRWISE */
    uint32_t max_peers;   /* 0: 16 (shared) or 2 (pairwise) */
    uint32_t entries;     /* directory entries per peer; 0: 32 */
    uint32_t timeout_ms;  /* ivs_bus_join: how long to wait for a peer that is formatting; 0: 5000 */
};

struct ivs_geometry {
    uint64_t region_size;
    uint32_t profile, max_peers, table_offset, sections_offset, section_size, entries, generation;
};

/*
 * Formats an all-zero region (`fmt` may be NULL for defaults) or joins a formatted one, and
 * returns its validated geometry. Never formats over anything else. Waits up to `timeout_ms`
 * for a peer that is formatting.
 */
int ivs_region_open(void *memory, uint64_t size, const struct ivs_region_format *fmt, int timeout_ms, struct ivs_geometry *g);

enum ivs_down_reason { IVS_DOWN_LEFT = 1, IVS_DOWN_HEARTBEAT, IVS_DOWN_DISCONNECTED, IVS_DOWN_REPLACED };
const char *ivs_down_reason_name(int reason);

struct ivs_peer {
    uint32_t slot, session, device_id, vectors, period;
    char name[IVS_NAME_MAX + 1];
};

/* One channel of a bus (either direction); the bus remembers where the caller's end lives. */
struct ivs_bus_channel {
    int used;
    int outgoing;                 /* we opened it (writer) or accepted it (reader) */
    uint32_t entry, serial, offset, size, vector;
    uint32_t peer_slot, peer_session;
    int draining;                 /* its writer left after closing: read to EOF */
    struct ivs_ring_end *end;     /* the caller's producer/consumer */
    struct ivs_doorbell_ctx { struct ivs_bus *bus; uint32_t device_id, vector; } bell_ctx;
};

struct ivs_known {
    int up;
    struct ivs_peer peer;
    uint32_t heartbeat, directory_generation;
    uint64_t changed_ms;
    /* An occupied slot that is not a peer (SPEC 3.5): its (owner, state, heartbeat) and when
     * they last changed. */
    int occupied;
    uint32_t owner, state, occupied_heartbeat;
    uint64_t occupied_ms;
};

#define IVS_BUS_CHANNELS 64

struct ivs_bus {
    struct ivs_device dev;
    struct ivs_geometry g;
    struct ivs_peer self;
    uint32_t capacity;            /* default capacity of channels we open */
    uint32_t heartbeat, directory_generation, serial;
    uint64_t last_beat_ms, last_scan_ms;
    int closed;
    int error;                    /* IVS_ERR_EVICTED once our slot was taken */
    struct ivs_known *known;      /* max_peers entries */
    struct ivs_bus_channel channels[IVS_BUS_CHANNELS];
    /* Called for peers coming up (reason 0) and going down (reason: enum ivs_down_reason). Set
     * it (and the rest of the struct to zero) before ivs_bus_join to hear of the peers already
     * there; join keeps these two fields. */
    void (*on_peer)(void *ctx, const struct ivs_peer *peer, int reason);
    void *on_peer_ctx;
    /* The longest heartbeat period accepted from a peer, ms (SPEC 3.5 "accepted period" P;
     * 0: 60000). A slot declaring more is not a peer, and an occupied slot that is not a peer
     * is freed after 3 × P without a change. Kept by join, like on_peer. */
    uint32_t max_peer_period;
};

/*
 * Joins the bus on `dev` (formatting the region if it is all zero) as `name` (1..64 bytes),
 * declaring a heartbeat period of `period_ms` (10..60000, and at most max_peer_period): it
 * beats every period / 2, and others take it for down after 3 periods without a beat. `channel_capacity` 0 picks a default.
 * The bus keeps a pointer to `dev`'s fds; `dev` itself is copied. Zero `b` first (and set
 * on_peer if wanted).
 */
int ivs_bus_join(struct ivs_bus *b, const struct ivs_device *dev, const char *name, uint32_t period_ms,
                 uint32_t channel_capacity, const struct ivs_region_format *fmt);
/*
 * Heartbeats when due, scans the peer table (who came, who left, who went silent) and the
 * directories that changed. Call at least every period / 4 (ivs_bus_wait does). Also sends the
 * doorbells the rate limit held back on the bus's channels.
 */
int ivs_bus_tick(struct ivs_bus *b);
/* Ticks if a quarter period passed since the last scan: cheap enough to call per message. */
int ivs_bus_poll(struct ivs_bus *b);
/* Ticks until `timeout_ms` passed, sleeping on the control vector or polling. */
int ivs_bus_wait(struct ivs_bus *b, int timeout_ms);
/* The peer that is up with this name, or NULL. */
const struct ivs_peer *ivs_bus_find(const struct ivs_bus *b, const char *name);
/*
 * Opens a channel `name` to the peer in `slot` (capacity 0: the bus default) and attaches `p`
 * as its producer. `p` must stay valid until the bus is left.
 */
int ivs_bus_open(struct ivs_bus *b, uint32_t slot, const char *name, uint32_t capacity, struct ivs_producer *p);
/*
 * Attaches `c` as consumer of the next channel named `name` opened to us (from `slot`, or any
 * with -1) that is not taken yet; IVS_AGAIN if there is none yet.
 */
int ivs_bus_accept(struct ivs_bus *b, const char *name, int slot, struct ivs_consumer *c);
/* Leaves: closes our channels, frees the slot, rings the others. Idempotent. */
void ivs_bus_leave(struct ivs_bus *b);

/* Milliseconds of CLOCK_MONOTONIC. */
uint64_t ivs_now_ms(void);

#ifdef __cplusplus
}
#endif
#endif

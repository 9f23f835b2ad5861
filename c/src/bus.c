/* SPEC.md "Region": superblock, peer table, liveness, channel directories. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "ivshmem.h"
#include "shared.h"

#define SUPERBLOCK_SIZE 4096u
#define SLOT_SIZE 256u
#define ENTRY_SIZE 128u
#define REGION_MAX (0x100000000ull - 4096u)
#define PERIOD_MIN 10u
#define PERIOD_MAX 60000u
#define CONTROL_VECTOR 0u

/* Superblock words. */
enum { SB_MAGIC, SB_STATE, SB_VERSION, SB_SUPERBLOCK_SIZE, SB_SIZE_LO, SB_SIZE_HI, SB_PROFILE, SB_MAX_PEERS,
       SB_TABLE_OFFSET, SB_SLOT_SIZE, SB_SECTIONS_OFFSET, SB_SECTION_SIZE, SB_ENTRIES, SB_ENTRY_SIZE, SB_GENERATION };
/* Slot words. */
enum { S_OWNER = 0, S_STATE = 1, S_DEVICE_ID = 2, S_VECTORS = 3, S_HEARTBEAT = 4, S_PERIOD = 5, S_DIRGEN = 6,
       S_NAME_LENGTH = 7, S_NAME = 8, S_PUBLISHED = 24 };
enum { SLOT_FREE, SLOT_JOINING, SLOT_UP, SLOT_LEAVING };
/* Directory entry words. */
enum { E_STATE = 0, E_SERIAL = 1, E_DEST_SLOT = 2, E_DEST_SESSION = 3, E_RING_OFFSET = 4, E_RING_SIZE = 5, E_VECTOR = 6,
       E_NAME_LENGTH = 7, E_NAME = 8 };
enum { ENTRY_FREE, ENTRY_OPEN, ENTRY_CLOSED };

const char *ivs_down_reason_name(int reason) {
    switch (reason) {
    case IVS_DOWN_LEFT: return "left";
    case IVS_DOWN_HEARTBEAT: return "heartbeat";
    case IVS_DOWN_DISCONNECTED: return "disconnected";
    case IVS_DOWN_REPLACED: return "replaced";
    default: return "up";
    }
}

/* A random u32 that is neither 0 nor READY (session, format token, generation). */
static uint32_t random_token(void) {
    uint32_t t = 0;
    while (t == 0 || t == IVS_REGION_READY) {
        if (getrandom(&t, sizeof t, 0) != (ssize_t)sizeof t) t = (uint32_t)ivs_now_ms() * 2654435761u ^ (uint32_t)getpid();
    }
    return t;
}

static void sleep_ms(unsigned ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static uint32_t *word_at(void *memory, uint64_t offset) { return (uint32_t *)((unsigned char *)memory + offset); }

/* ---- Superblock ------------------------------------------------------------------------------ */

static int plan(uint64_t region_size, const struct ivs_region_format *fmt, struct ivs_geometry *g) {
    uint32_t profile = fmt && fmt->profile ? fmt->profile : IVS_PROFILE_SHARED;
    if (profile != IVS_PROFILE_SHARED && profile != IVS_PROFILE_PAIRWISE) return IVS_ERR_INVALID;
    uint32_t max_peers = fmt && fmt->max_peers ? fmt->max_peers : profile == IVS_PROFILE_PAIRWISE ? 2 : 16;
    if (max_peers < 2 || max_peers > IVS_MAX_PEERS || (profile == IVS_PROFILE_PAIRWISE && max_peers != 2)) return IVS_ERR_INVALID;
    uint32_t entries = fmt && fmt->entries ? fmt->entries : 32;
    if (entries > 1024) return IVS_ERR_INVALID;
    uint64_t sections = (SUPERBLOCK_SIZE + (uint64_t)max_peers * SLOT_SIZE + 4095) / 4096 * 4096;
    if (region_size < sections) return IVS_ERR_SIZE;
    uint64_t section = (region_size - sections) / max_peers / 4096 * 4096;
    if (section < (uint64_t)entries * ENTRY_SIZE + 4096) return IVS_ERR_SIZE;
    *g = (struct ivs_geometry){.region_size = region_size, .profile = profile, .max_peers = max_peers,
                               .table_offset = SUPERBLOCK_SIZE, .sections_offset = (uint32_t)sections,
                               .section_size = (uint32_t)section, .entries = entries};
    return IVS_OK;
}

static int format_region(void *memory, uint64_t region_size, const struct ivs_region_format *fmt, struct ivs_geometry *g) {
    uint32_t *sb = memory;
    int r = plan(region_size, fmt, g);
    if (r != IVS_OK) {
        st_sc(&sb[SB_STATE], 0); /* give the region back unformatted */
        return r;
    }
    g->generation = random_token();
    /* Peers may have scribbled before the region was formatted: start from clean tables. */
    memset((unsigned char *)memory + SUPERBLOCK_SIZE, 0, g->sections_offset - SUPERBLOCK_SIZE);
    for (uint32_t i = 0; i < g->max_peers; i++)
        memset((unsigned char *)memory + g->sections_offset + (uint64_t)i * g->section_size, 0, (size_t)g->entries * ENTRY_SIZE);
    st_relaxed(&sb[SB_VERSION], 1u | 1u << 16); /* major 1, minor 1 */
    st_relaxed(&sb[SB_SUPERBLOCK_SIZE], SUPERBLOCK_SIZE);
    st_relaxed(&sb[SB_SIZE_LO], (uint32_t)region_size);
    st_relaxed(&sb[SB_SIZE_HI], (uint32_t)(region_size >> 32));
    st_relaxed(&sb[SB_PROFILE], g->profile);
    st_relaxed(&sb[SB_MAX_PEERS], g->max_peers);
    st_relaxed(&sb[SB_TABLE_OFFSET], g->table_offset);
    st_relaxed(&sb[SB_SLOT_SIZE], SLOT_SIZE);
    st_relaxed(&sb[SB_SECTIONS_OFFSET], g->sections_offset);
    st_relaxed(&sb[SB_SECTION_SIZE], g->section_size);
    st_relaxed(&sb[SB_ENTRIES], g->entries);
    st_relaxed(&sb[SB_ENTRY_SIZE], ENTRY_SIZE);
    st_relaxed(&sb[SB_GENERATION], g->generation);
    st_sc(&sb[SB_MAGIC], IVS_REGION_MAGIC);
    st_sc(&sb[SB_STATE], IVS_REGION_READY); /* publishes everything above */
    return IVS_OK;
}

/* One copy of the superblock; only the copy is looked at. */
static int validate_region(const uint32_t *sb, uint64_t region_size, struct ivs_geometry *g) {
    uint32_t c[16];
    for (int i = 0; i < 16; i++) c[i] = ld_relaxed(&sb[i]);
    if ((c[SB_VERSION] & 0xffffu) != 1) return IVS_ERR_REGION;
    uint64_t size = (uint64_t)c[SB_SIZE_LO] | (uint64_t)c[SB_SIZE_HI] << 32;
    uint32_t max_peers = c[SB_MAX_PEERS], entries = c[SB_ENTRIES], sections = c[SB_SECTIONS_OFFSET], section = c[SB_SECTION_SIZE];
    if (size != region_size || c[SB_SUPERBLOCK_SIZE] != SUPERBLOCK_SIZE || c[SB_SLOT_SIZE] != SLOT_SIZE ||
        c[SB_ENTRY_SIZE] != ENTRY_SIZE || (c[SB_PROFILE] != IVS_PROFILE_PAIRWISE && c[SB_PROFILE] != IVS_PROFILE_SHARED) ||
        max_peers < 2 || max_peers > IVS_MAX_PEERS || (c[SB_PROFILE] == IVS_PROFILE_PAIRWISE && max_peers != 2) ||
        entries < 1 || entries > 1024 || c[SB_TABLE_OFFSET] != SUPERBLOCK_SIZE || sections % 4096 ||
        sections < SUPERBLOCK_SIZE + (uint64_t)max_peers * SLOT_SIZE || section % 4096 ||
        section < (uint64_t)entries * ENTRY_SIZE + 4096 || sections + (uint64_t)max_peers * section > region_size)
        return IVS_ERR_REGION;
    *g = (struct ivs_geometry){.region_size = region_size, .profile = c[SB_PROFILE], .max_peers = max_peers,
                               .table_offset = SUPERBLOCK_SIZE, .sections_offset = sections, .section_size = section,
                               .entries = entries, .generation = c[SB_GENERATION]};
    return IVS_OK;
}

int ivs_region_open(void *memory, uint64_t size, const struct ivs_region_format *fmt, int timeout_ms, struct ivs_geometry *g) {
    if (!memory || ((uintptr_t)memory & 7) || !g) return IVS_ERR_INVALID;
    if (size < 2 * SUPERBLOCK_SIZE) return IVS_ERR_SIZE;
    uint64_t region_size = size > REGION_MAX ? REGION_MAX : size;
    uint32_t *sb = memory;
    uint64_t deadline = ivs_now_ms() + (uint64_t)(timeout_ms < 0 ? 5000 : timeout_ms);
    for (;;) {
        uint32_t magic = ld_sc(&sb[SB_MAGIC]);
        uint32_t state = ld_sc(&sb[SB_STATE]);
        if (state == IVS_REGION_READY && magic == IVS_REGION_MAGIC) return validate_region(sb, region_size, g);
        if (magic == 0 && state == 0) {
            if (cas_sc(&sb[SB_STATE], 0, random_token())) return format_region(memory, region_size, fmt, g);
            continue;
        }
        if (magic != 0 && magic != IVS_REGION_MAGIC) return IVS_ERR_REGION; /* not ours: never formatted over */
        /* A peer is formatting (microseconds), unless it died doing it: only a person clears that. */
        if (ivs_now_ms() > deadline) return IVS_ERR_TIMEOUT;
        sleep_ms(2);
    }
}

/* ---- Slots and entries ----------------------------------------------------------------------- */

static uint32_t *slot_words(const struct ivs_bus *b, uint32_t i) {
    return word_at(b->dev.memory, b->g.table_offset + (uint64_t)i * SLOT_SIZE);
}
static uint64_t section_offset(const struct ivs_bus *b, uint32_t i) { return b->g.sections_offset + (uint64_t)i * b->g.section_size; }
static uint32_t *entry_words(const struct ivs_bus *b, uint32_t i, uint32_t e) {
    return word_at(b->dev.memory, section_offset(b, i) + (uint64_t)e * ENTRY_SIZE);
}

struct slot_copy {
    uint32_t owner, published, state, device_id, vectors, heartbeat, period, dirgen;
    int problem;
    int moved;    /* the slot changed hands while it was copied (SPEC 3.3) */
    char name[IVS_NAME_MAX + 1];
};

/* Copies slot i once and validates the copy. */
static uint32_t accepted_period(const struct ivs_bus *b) {
    return b->max_peer_period >= PERIOD_MIN && b->max_peer_period <= PERIOD_MAX ? b->max_peer_period : PERIOD_MAX;
}

static void read_slot(const struct ivs_bus *b, uint32_t i, struct slot_copy *s) {
    const uint32_t *w = slot_words(b, i);
    s->owner = ld_sc(&w[S_OWNER]);
    s->published = ld_sc(&w[S_PUBLISHED]);
    s->state = ld_sc(&w[S_STATE]);
    s->device_id = ld_relaxed(&w[S_DEVICE_ID]);
    s->vectors = ld_relaxed(&w[S_VECTORS]);
    s->heartbeat = ld_relaxed(&w[S_HEARTBEAT]);
    s->period = ld_relaxed(&w[S_PERIOD]);
    s->dirgen = ld_relaxed(&w[S_DIRGEN]);
    uint32_t name_length = ld_relaxed(&w[S_NAME_LENGTH]);
    s->problem = s->state > SLOT_LEAVING || (s->device_id != IVS_NO_DOORBELL && s->device_id > 0xffff) || s->vectors > 256 ||
                 s->period < PERIOD_MIN || s->period > accepted_period(b) || name_length > IVS_NAME_MAX;
    s->name[0] = 0;
    if (!s->problem) {
        memcpy(s->name, &w[S_NAME], name_length);
        s->name[name_length] = 0;
    }
    /* The fields above may be a mix of two owners': the copy counts only if nobody came or went. */
    s->moved = ld_sc(&w[S_OWNER]) != s->owner || ld_sc(&w[S_PUBLISHED]) != s->published;
}

struct entry_copy {
    uint32_t state, serial, dest_slot, dest_session, ring_offset, ring_size, vector;
    int problem;
    char name[IVS_NAME_MAX + 1];
};

/* Copies entry e of slot i's directory once and validates it against that section. */
static void read_entry(const struct ivs_bus *b, uint32_t i, uint32_t e, struct entry_copy *x) {
    const uint32_t *w = entry_words(b, i, e);
    x->state = ld_sc(&w[E_STATE]);
    x->serial = ld_relaxed(&w[E_SERIAL]);
    x->dest_slot = ld_relaxed(&w[E_DEST_SLOT]);
    x->dest_session = ld_relaxed(&w[E_DEST_SESSION]);
    x->ring_offset = ld_relaxed(&w[E_RING_OFFSET]);
    x->ring_size = ld_relaxed(&w[E_RING_SIZE]);
    x->vector = ld_relaxed(&w[E_VECTOR]);
    uint32_t name_length = ld_relaxed(&w[E_NAME_LENGTH]);
    uint64_t start = section_offset(b, i) + (uint64_t)b->g.entries * ENTRY_SIZE;
    uint64_t end = section_offset(b, i) + b->g.section_size;
    x->problem = x->state > ENTRY_CLOSED || x->dest_slot >= b->g.max_peers || x->ring_offset % 8 || x->ring_size % 8 ||
                 x->ring_size < IVS_RING_HEADER_SIZE + IVS_RING_MIN_CAPACITY || x->ring_offset < start ||
                 (uint64_t)x->ring_offset + x->ring_size > end || x->vector > 255 || name_length == 0 ||
                 name_length > IVS_NAME_MAX;
    x->name[0] = 0;
    if (!x->problem) {
        memcpy(x->name, &w[E_NAME], name_length);
        x->name[name_length] = 0;
    }
}

/* ---- Doorbells ------------------------------------------------------------------------------- */

static int doorbells_with(const struct ivs_bus *b, const struct ivs_peer *other) {
    return b->self.device_id != IVS_NO_DOORBELL && b->self.vectors > 0 && other->device_id != IVS_NO_DOORBELL &&
           other->vectors > 0 && b->dev.ring != NULL;
}

static void ring_peer(struct ivs_bus *b, const struct ivs_peer *peer, uint32_t vector) {
    if (!doorbells_with(b, peer)) return;
    b->dev.ring(b->dev.ctx, peer->device_id, vector);
}

static int channel_ring(void *ctx) {
    struct ivs_doorbell_ctx *d = ctx;
    return d->bus->dev.ring(d->bus->dev.ctx, d->device_id, d->vector);
}

/* Both ends agree: doorbells only when each can ring the other and be woken on the vector. */
static struct ivs_doorbell channel_bell(struct ivs_bus *b, struct ivs_bus_channel *ch, const struct ivs_peer *other) {
    struct ivs_doorbell bell = {.ring = NULL, .ctx = NULL, .fd = -1};
    if (!doorbells_with(b, other) || ch->vector >= b->self.vectors || ch->vector >= other->vectors || !b->dev.fds) return bell;
    ch->bell_ctx.bus = b;
    ch->bell_ctx.device_id = other->device_id;
    ch->bell_ctx.vector = ch->vector;
    bell.ring = channel_ring;
    bell.ctx = &ch->bell_ctx;
    bell.fd = b->dev.fds[ch->vector];
    return bell;
}

/* ---- Join, heartbeat, scan ------------------------------------------------------------------- */

static int owned(const struct ivs_bus *b) { return ld_sc(&slot_words(b, b->self.slot)[S_OWNER]) == b->self.session; }

int ivs_bus_join(struct ivs_bus *b, const struct ivs_device *dev, const char *name, uint32_t period_ms,
                 uint32_t channel_capacity, const struct ivs_region_format *fmt) {
    void (*on_peer)(void *, const struct ivs_peer *, int) = b->on_peer;
    void *on_peer_ctx = b->on_peer_ctx;
    uint32_t max_peer_period = b->max_peer_period;
    memset(b, 0, sizeof *b);
    b->on_peer = on_peer; /* set before joining, it hears of the peers already there */
    b->on_peer_ctx = on_peer_ctx;
    b->max_peer_period = max_peer_period;
    size_t name_length = name ? strlen(name) : 0;
    if (!dev || !dev->memory || name_length == 0 || name_length > IVS_NAME_MAX || period_ms < PERIOD_MIN ||
        period_ms > accepted_period(b))
        return IVS_ERR_INVALID;
    if (channel_capacity && (channel_capacity < IVS_RING_MIN_CAPACITY || channel_capacity > IVS_RING_MAX_CAPACITY ||
                             (channel_capacity & (channel_capacity - 1))))
        return IVS_ERR_INVALID;
    b->dev = *dev;
    int r = ivs_region_open(dev->memory, dev->size, fmt, fmt && fmt->timeout_ms ? (int)fmt->timeout_ms : 5000, &b->g);
    if (r != IVS_OK) return r;
    if (!channel_capacity) {
        uint64_t quarter = (b->g.section_size - (uint64_t)b->g.entries * ENTRY_SIZE) / 4;
        channel_capacity = 65536;
        while (channel_capacity > IVS_RING_MIN_CAPACITY && IVS_RING_SIZE(channel_capacity) > quarter) channel_capacity >>= 1;
    }
    b->capacity = channel_capacity;
    b->known = calloc(b->g.max_peers, sizeof *b->known);
    if (!b->known) return IVS_ERR_SYSTEM;
    uint32_t device_id = dev->ring && dev->id <= 0xffff ? dev->id : IVS_NO_DOORBELL;
    uint32_t vectors = device_id != IVS_NO_DOORBELL && dev->fds ? dev->vectors : 0;
    uint32_t session = random_token();

    /* A slot still held under our own device ID belongs to a dead earlier incarnation of us. */
    if (device_id != IVS_NO_DOORBELL) {
        for (uint32_t i = 0; i < b->g.max_peers; i++) {
            struct slot_copy s;
            read_slot(b, i, &s);
            if (s.owner != 0 && s.device_id == device_id) cas_sc(&slot_words(b, i)[S_OWNER], s.owner, 0);
        }
    }
    uint32_t slot = UINT32_MAX;
    for (uint32_t i = 0; i < b->g.max_peers && slot == UINT32_MAX; i++)
        if (cas_sc(&slot_words(b, i)[S_OWNER], 0, session)) slot = i;
    if (slot == UINT32_MAX) {
        free(b->known);
        b->known = NULL;
        return IVS_ERR_BUS_FULL;
    }
    uint32_t *w = slot_words(b, slot);
    st_sc(&w[S_STATE], SLOT_JOINING);
    st_relaxed(&w[S_DEVICE_ID], device_id);
    st_relaxed(&w[S_VECTORS], vectors);
    st_relaxed(&w[S_PERIOD], period_ms);
    st_relaxed(&w[S_HEARTBEAT], 0);
    st_relaxed(&w[S_DIRGEN], 0);
    memset(&w[S_NAME], 0, IVS_NAME_MAX);
    memcpy(&w[S_NAME], name, name_length);
    st_relaxed(&w[S_NAME_LENGTH], (uint32_t)name_length);
    /* Our section may hold a previous owner's directory. */
    for (uint32_t e = 0; e < b->g.entries; e++) st_sc(&entry_words(b, slot, e)[E_STATE], ENTRY_FREE);
    st_sc(&w[S_STATE], SLOT_UP);
    /* Last: until published equals owner, the other fields may still be a previous owner's. */
    st_sc(&w[S_PUBLISHED], session);

    b->self = (struct ivs_peer){.slot = slot, .session = session, .device_id = device_id, .vectors = vectors, .period = period_ms};
    memcpy(b->self.name, name, name_length + 1);
    b->last_beat_ms = b->last_scan_ms = ivs_now_ms();
    ivs_bus_tick(b);
    for (uint32_t i = 0; i < b->g.max_peers; i++)
        if (b->known[i].up) ring_peer(b, &b->known[i].peer, CONTROL_VECTOR);
    return IVS_OK;
}

static void end_all(struct ivs_bus *b, int status) {
    for (int i = 0; i < IVS_BUS_CHANNELS; i++)
        if (b->channels[i].used && b->channels[i].end) ivs_ring_abandon(b->channels[i].end, status);
}

static void peer_down(struct ivs_bus *b, uint32_t slot, int reason, int reclaim) {
    struct ivs_known *k = &b->known[slot];
    if (!k->up) return;
    k->up = 0;
    for (int i = 0; i < IVS_BUS_CHANNELS; i++) {
        struct ivs_bus_channel *ch = &b->channels[i];
        if (!ch->used || ch->peer_slot != slot || ch->peer_session != k->peer.session) continue;
        if (!ch->outgoing) {
            /* A peer that left cleanly closed its writers first: their readers may drain to EOF
             * while nobody else takes the slot. Any other channel ends now. */
            const uint32_t *ring = word_at(b->dev.memory, ch->offset);
            if (reason == IVS_DOWN_LEFT && ch->end && ld_sc(&ring[W_WRITER_CLOSED]) != 0) {
                ch->draining = 1;
                /* Read-only from now on: the section may get a new owner (SPEC 3.5). */
                ivs_ring_detach(ch->end);
                continue;
            }
            if (!ch->end) { /* forgotten by the caller: nothing to tell */
                ch->used = 0;
                continue;
            }
        }
        if (ch->end) ivs_ring_abandon(ch->end, IVS_ERR_PEER_GONE);
    }
    if (reclaim) cas_sc(&slot_words(b, slot)[S_OWNER], k->peer.session, 0); /* fails harmlessly if another was first */
    if (b->on_peer) b->on_peer(b->on_peer_ctx, &k->peer, reason);
}

/* Ends drains whose section has a new owner; forgets accepted channels whose entry is gone. */
static void tidy(struct ivs_bus *b) {
    for (int i = 0; i < IVS_BUS_CHANNELS; i++) {
        struct ivs_bus_channel *ch = &b->channels[i];
        if (!ch->used || ch->outgoing) continue;
        if (ch->draining && ld_sc(&slot_words(b, ch->peer_slot)[S_OWNER]) != 0) {
            if (ch->end) ivs_ring_abandon(ch->end, IVS_ERR_PEER_GONE);
            ch->draining = 0;
            ch->used = ch->end != NULL;
        }
    }
}

static void beat(struct ivs_bus *b, uint64_t now) {
    /* Every half period: one late timer of ours is still well inside the 3 periods (SPEC 3.5). */
    if (now - b->last_beat_ms < b->self.period / 2) return;
    b->last_beat_ms = now;
    if (!owned(b)) {
        /* Declared dead while stalled, or freed by a hostile peer: stop writing to the region. */
        b->error = IVS_ERR_EVICTED;
        b->closed = 1;
        end_all(b, IVS_ERR_EVICTED);
        return;
    }
    st_sc(&slot_words(b, b->self.slot)[S_HEARTBEAT], ++b->heartbeat);
}

/* SPEC 3.5 (1.1): an occupied slot that is not a peer (died joining or leaving, garbage) is
 * freed once its (owner, state, heartbeat) stood still for 3 × P. */
static void watch_occupied(struct ivs_bus *b, uint32_t i, const struct slot_copy *s, uint64_t now, int stalled) {
    struct ivs_known *k = &b->known[i];
    if (s->owner == 0 || s->moved) {
        k->occupied = 0;
        return;
    }
    if (!k->occupied || stalled || s->owner != k->owner || s->state != k->state || s->heartbeat != k->occupied_heartbeat) {
        k->occupied = 1;
        k->owner = s->owner;
        k->state = s->state;
        k->occupied_heartbeat = s->heartbeat;
        k->occupied_ms = now;
        return;
    }
    if (now - k->occupied_ms > 3ull * accepted_period(b)) {
        cas_sc(&slot_words(b, i)[S_OWNER], s->owner, 0); /* fails harmlessly if it changed meanwhile */
        k->occupied = 0;
    }
}

static void scan(struct ivs_bus *b, uint64_t now) {
    /* After a stall of our own, nobody's silence means anything. */
    int stalled = now - b->last_scan_ms > b->self.period;
    b->last_scan_ms = now;
    tidy(b);
    for (uint32_t i = 0; i < b->g.max_peers; i++) {
        if (i == b->self.slot) continue;
        struct slot_copy s;
        read_slot(b, i, &s);
        struct ivs_known *k = &b->known[i];
        if (k->up && (s.owner != k->peer.session || s.state != SLOT_UP))
            peer_down(b, i, s.owner == k->peer.session || s.owner == 0 ? IVS_DOWN_LEFT : IVS_DOWN_REPLACED, 0);
        if (k->up && s.moved) continue; /* a torn copy says nothing about a known peer (SPEC 3.3) */
        if (!k->up && (s.owner == 0 || s.state != SLOT_UP || s.published != s.owner || s.problem || s.moved)) {
            watch_occupied(b, i, &s, now, stalled);
            continue;
        }
        k->occupied = 0;
        if (!k->up) {
            k->up = 1;
            k->peer = (struct ivs_peer){.slot = i, .session = s.owner, .device_id = s.device_id, .vectors = s.vectors,
                                        .period = s.period};
            memcpy(k->peer.name, s.name, sizeof s.name);
            k->heartbeat = s.heartbeat;
            k->changed_ms = now;
            k->directory_generation = s.dirgen;
            if (b->on_peer) b->on_peer(b->on_peer_ctx, &k->peer, 0);
        }
        if (s.heartbeat != k->heartbeat || stalled) {
            k->heartbeat = s.heartbeat;
            k->changed_ms = now;
        } else if (now - k->changed_ms > 3ull * k->peer.period) {
            peer_down(b, i, IVS_DOWN_HEARTBEAT, 1);
        }
    }
}

int ivs_bus_tick(struct ivs_bus *b) {
    if (b->closed) return b->error ? b->error : IVS_ERR_CLOSED;
    uint64_t now = ivs_now_ms();
    beat(b, now);
    if (b->closed) return b->error;
    scan(b, now);
    for (int i = 0; i < IVS_BUS_CHANNELS; i++)
        if (b->channels[i].used && b->channels[i].end) ivs_ring_doorbells(b->channels[i].end);
    return IVS_OK;
}

int ivs_bus_poll(struct ivs_bus *b) {
    if (b->closed) return b->error ? b->error : IVS_ERR_CLOSED;
    uint64_t quarter = b->self.period / 4 < 5 ? 5 : b->self.period / 4;
    return ivs_now_ms() - b->last_scan_ms >= quarter ? ivs_bus_tick(b) : IVS_OK;
}

int ivs_bus_wait(struct ivs_bus *b, int timeout_ms) {
    uint64_t end = ivs_now_ms() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms);
    for (;;) {
        int r = ivs_bus_tick(b);
        if (r != IVS_OK) return r;
        uint64_t now = ivs_now_ms();
        if (now >= end) return IVS_OK;
        uint64_t step = b->self.period / 4 < 5 ? 5 : b->self.period / 4;
        if (step > end - now) step = end - now;
        if (b->self.vectors > 0 && b->dev.fds) {
            struct pollfd pfd = {.fd = b->dev.fds[CONTROL_VECTOR], .events = POLLIN};
            if (poll(&pfd, 1, (int)step) > 0 && (pfd.revents & POLLIN)) {
                uint64_t count;
                ssize_t n = read(pfd.fd, &count, sizeof count);
                (void)n;
            }
        } else {
            sleep_ms((unsigned)step);
        }
    }
}

const struct ivs_peer *ivs_bus_find(const struct ivs_bus *b, const char *name) {
    for (uint32_t i = 0; i < b->g.max_peers; i++)
        if (b->known[i].up && strcmp(b->known[i].peer.name, name) == 0) return &b->known[i].peer;
    return NULL;
}

/* ---- Channels -------------------------------------------------------------------------------- */

/* Frees our entries whose channel is over: our writer closed and the reader too, the reader's
 * peer down, or our writer failed. Decided from our writer's own state, not from the shared
 * writer-closed word, which anyone mapping the region can set on a live ring (SPEC 3.7). */
static void reclaim(struct ivs_bus *b) {
    for (int i = 0; i < IVS_BUS_CHANNELS; i++) {
        struct ivs_bus_channel *ch = &b->channels[i];
        if (!ch->used || !ch->outgoing) continue;
        const uint32_t *ring = word_at(b->dev.memory, ch->offset);
        const struct ivs_known *k = &b->known[ch->peer_slot];
        int gone = !k->up || k->peer.session != ch->peer_session;
        int finished = ch->end && ch->end->closed && ld_sc(&ring[W_READER_CLOSED]) != 0;
        if (gone || finished || (ch->end && ch->end->error)) {
            /* The next ring may be formatted at these bytes: the writer stores nothing more. */
            if (ch->end) ivs_ring_detach(ch->end);
            st_sc(&entry_words(b, b->self.slot, ch->entry)[E_STATE], ENTRY_FREE);
            ch->used = 0;
        }
    }
}

static struct ivs_bus_channel *free_channel(struct ivs_bus *b) {
    for (int i = 0; i < IVS_BUS_CHANNELS; i++)
        if (!b->channels[i].used) return &b->channels[i];
    return NULL;
}

int ivs_bus_open(struct ivs_bus *b, uint32_t slot, const char *name, uint32_t capacity, struct ivs_producer *p) {
    if (b->closed) return b->error ? b->error : IVS_ERR_CLOSED;
    size_t name_length = name ? strlen(name) : 0;
    if (name_length == 0 || name_length > IVS_NAME_MAX || slot >= b->g.max_peers || !b->known[slot].up) return IVS_ERR_INVALID;
    if (!capacity) capacity = b->capacity;
    if (capacity < IVS_RING_MIN_CAPACITY || capacity > IVS_RING_MAX_CAPACITY || (capacity & (capacity - 1))) return IVS_ERR_INVALID;
    const struct ivs_peer *to = &b->known[slot].peer;
    reclaim(b);
    /* First free entry; first fit in our ring area, 128-aligned, around our open rings. */
    uint32_t entry = UINT32_MAX;
    for (uint32_t e = 0; e < b->g.entries && entry == UINT32_MAX; e++) {
        int taken = 0;
        for (int i = 0; i < IVS_BUS_CHANNELS; i++)
            if (b->channels[i].used && b->channels[i].outgoing && b->channels[i].entry == e) taken = 1;
        if (!taken) entry = e;
    }
    struct ivs_bus_channel *ch = free_channel(b);
    uint64_t size = IVS_RING_SIZE(capacity);
    uint64_t start = section_offset(b, b->self.slot) + (uint64_t)b->g.entries * ENTRY_SIZE;
    uint64_t end = section_offset(b, b->self.slot) + b->g.section_size;
    uint64_t offset = (start + 127) / 128 * 128;
    for (int moved = 1; moved;) {
        moved = 0;
        for (int i = 0; i < IVS_BUS_CHANNELS; i++) {
            const struct ivs_bus_channel *u = &b->channels[i];
            if (u->used && u->outgoing && offset < (uint64_t)u->offset + u->size && u->offset < offset + size) {
                offset = ((uint64_t)u->offset + u->size + 127) / 128 * 128;
                moved = 1;
            }
        }
    }
    if (entry == UINT32_MAX || !ch || offset + size > end) return IVS_ERR_BUS_FULL;
    memset(ch, 0, sizeof *ch);
    ch->used = 1;
    ch->outgoing = 1;
    ch->entry = entry;
    ch->serial = ++b->serial;
    ch->offset = (uint32_t)offset;
    ch->size = (uint32_t)size;
    ch->peer_slot = slot;
    ch->peer_session = to->session;
    uint32_t shared = to->vectors < b->self.vectors ? to->vectors : b->self.vectors;
    ch->vector = doorbells_with(b, to) && shared > 1 ? 1 + entry % (shared - 1) : CONTROL_VECTOR;
    void *ring = word_at(b->dev.memory, offset);
    ivs_ring_format(ring, size, capacity, 0);
    struct ivs_doorbell bell = channel_bell(b, ch, to);
    int r = ivs_producer_attach(p, ring, size, &bell);
    if (r != IVS_OK) {
        ch->used = 0;
        return r;
    }
    ch->end = &p->e;
    /* The entry: free while its fields change, open last. */
    uint32_t *w = entry_words(b, b->self.slot, entry);
    st_sc(&w[E_STATE], ENTRY_FREE);
    st_relaxed(&w[E_SERIAL], ch->serial);
    st_relaxed(&w[E_DEST_SLOT], slot);
    st_relaxed(&w[E_DEST_SESSION], to->session);
    st_relaxed(&w[E_RING_OFFSET], ch->offset);
    st_relaxed(&w[E_RING_SIZE], ch->size);
    st_relaxed(&w[E_VECTOR], ch->vector);
    memset(&w[E_NAME], 0, IVS_NAME_MAX);
    memcpy(&w[E_NAME], name, name_length);
    st_relaxed(&w[E_NAME_LENGTH], (uint32_t)name_length);
    st_sc(&w[E_STATE], ENTRY_OPEN);
    st_sc(&slot_words(b, b->self.slot)[S_DIRGEN], ++b->directory_generation);
    ring_peer(b, to, CONTROL_VECTOR);
    return IVS_OK;
}

int ivs_bus_accept(struct ivs_bus *b, const char *name, int slot, struct ivs_consumer *c) {
    if (b->closed) return b->error ? b->error : IVS_ERR_CLOSED;
    if (!name) return IVS_ERR_INVALID;
    for (uint32_t i = 0; i < b->g.max_peers; i++) {
        const struct ivs_known *k = &b->known[i];
        if (!k->up || (slot >= 0 && (uint32_t)slot != i)) continue;
        for (uint32_t e = 0; e < b->g.entries; e++) {
            struct entry_copy x;
            read_entry(b, i, e, &x);
            if (x.state != ENTRY_OPEN || x.dest_slot != b->self.slot || x.dest_session != b->self.session) continue;
            if (x.problem || strcmp(x.name, name) != 0) continue; /* an unusable entry is skipped, not fatal */
            int seen = 0;
            for (int j = 0; j < IVS_BUS_CHANNELS; j++) {
                const struct ivs_bus_channel *u = &b->channels[j];
                if (u->used && !u->outgoing && u->peer_slot == i && u->peer_session == k->peer.session && u->entry == e &&
                    u->serial == x.serial)
                    seen = 1;
            }
            if (seen) continue;
            struct ivs_bus_channel *ch = free_channel(b);
            if (!ch) return IVS_ERR_BUS_FULL;
            memset(ch, 0, sizeof *ch);
            ch->used = 1;
            ch->entry = e;
            ch->serial = x.serial;
            ch->offset = x.ring_offset;
            ch->size = x.ring_size;
            ch->vector = x.vector;
            ch->peer_slot = i;
            ch->peer_session = k->peer.session;
            struct ivs_doorbell bell = channel_bell(b, ch, &k->peer);
            int r = ivs_consumer_attach(c, word_at(b->dev.memory, x.ring_offset), x.ring_size, &bell);
            ch->end = &c->e; /* also when the ring was refused: it is not offered again */
            return r;
        }
    }
    return IVS_AGAIN;
}

void ivs_bus_leave(struct ivs_bus *b) {
    if (!b->known) return;
    if (!b->closed && owned(b)) {
        /* Nothing shared is written unless the slot, and so the section, is still ours. */
        uint32_t *w = slot_words(b, b->self.slot);
        st_sc(&w[S_STATE], SLOT_LEAVING);
        for (int i = 0; i < IVS_BUS_CHANNELS; i++) {
            struct ivs_bus_channel *ch = &b->channels[i];
            if (!ch->used) continue;
            if (ch->outgoing) {
                if (ch->end) ivs_producer_close((struct ivs_producer *)(void *)ch->end);
                st_sc(&entry_words(b, b->self.slot, ch->entry)[E_STATE], ENTRY_CLOSED);
            } else if (ch->end) {
                ivs_consumer_close((struct ivs_consumer *)(void *)ch->end);
            }
        }
        cas_sc(&w[S_OWNER], b->self.session, 0);
        for (uint32_t i = 0; i < b->g.max_peers; i++)
            if (b->known[i].up) ring_peer(b, &b->known[i].peer, CONTROL_VECTOR);
    }
    b->closed = 1;
    end_all(b, IVS_ERR_CLOSED);
    free(b->known);
    b->known = NULL;
}

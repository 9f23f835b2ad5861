/* Accessors for words of shared memory. Every shared word goes through one of these, so the
 * compiler reads it exactly once (no double fetch) and orders it as SPEC.md asks. */
#ifndef IVS_SHARED_H
#define IVS_SHARED_H

#include <stdatomic.h>
#include <stdint.h>

/* Words written by one peer and read by others, in the order SPEC.md gives them. */
static inline uint32_t ld_relaxed(const uint32_t *p) {
    return atomic_load_explicit((const _Atomic uint32_t *)p, memory_order_relaxed);
}
static inline uint32_t ld_sc(const uint32_t *p) {
    return atomic_load_explicit((const _Atomic uint32_t *)p, memory_order_seq_cst);
}
static inline void st_relaxed(uint32_t *p, uint32_t v) {
    atomic_store_explicit((_Atomic uint32_t *)p, v, memory_order_relaxed);
}
static inline void st_sc(uint32_t *p, uint32_t v) {
    atomic_store_explicit((_Atomic uint32_t *)p, v, memory_order_seq_cst);
}
static inline int cas_sc(uint32_t *p, uint32_t expected, uint32_t desired) {
    return atomic_compare_exchange_strong_explicit((_Atomic uint32_t *)p, &expected, desired, memory_order_seq_cst,
                                                   memory_order_seq_cst);
}

/* u32 word indexes of the ring header (SPEC "Ring", Layout). */
enum {
    W_MAGIC = 0,
    W_VERSION = 1,
    W_HEADER_SIZE = 2,
    W_CAPACITY = 3,
    W_FLAGS = 4,
    W_TAIL_LO = 32,
    W_TAIL_HI = 33,
    W_WRITER_CLOSED = 34,
    W_PRODUCER_WAIT = 64,
    W_HEAD_LO = 96,
    W_HEAD_HI = 97,
    W_READER_CLOSED = 98,
    W_CONSUMER_WAIT = 128,
};

#endif

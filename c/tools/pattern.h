/* The message pattern the cross-language tests check on both sides (test/c/pattern.ts). */
#ifndef IVS_PATTERN_H
#define IVS_PATTERN_H
#include <stdint.h>

/* Payload length of message i when messages are at most `max` bytes. */
static inline uint32_t pattern_length(uint32_t i, uint32_t max) { return (uint32_t)(((uint64_t)i * 7919u) % ((uint64_t)max + 1)); }
static inline uint8_t pattern_byte(uint32_t i, uint32_t k) { return (uint8_t)(i * 31u + k * 7u + (k >> 8)); }
static inline uint32_t pattern_type(uint32_t i) { return i % 7u; }

static inline void pattern_fill(uint8_t *p, uint32_t i, uint32_t length) {
    for (uint32_t k = 0; k < length; k++) p[k] = pattern_byte(i, k);
}
static inline int pattern_check(const uint8_t *p, uint32_t i, uint32_t length) {
    for (uint32_t k = 0; k < length; k++)
        if (p[k] != pattern_byte(i, k)) return 0;
    return 1;
}
#endif

/* A keyed string hash for tables whose keys come from clients (bearer
 * tokens, routing keys): slot positions must not be predictable, so each
 * table hashes with its own random seed. */
#ifndef IG_HASH_H
#define IG_HASH_H
#include <stddef.h>
#include <stdint.h>

/** A random odd seed (getrandom; an address-based one if that fails). */
uint64_t ig_hash_seed(void);
/** 64-bit hash of s[0..n) under seed. */
uint64_t ig_hash_keyed(uint64_t seed, const char *s, size_t n);
#endif

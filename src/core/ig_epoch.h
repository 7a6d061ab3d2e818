/* Quiescent-state-based reclamation for the registry snapshot.
 *
 * Readers (loop threads) use a snapshot only inside one callback and never
 * keep a pointer to it across callbacks. Between callbacks a thread is
 * quiescent; it says so in its uv_prepare and uv_check handles. Something
 * retired at epoch E is freed once every reader has been quiescent at an
 * epoch >= E, so no reader can still hold it. Readers pay one relaxed load
 * and one release store per loop iteration, nothing per request. */
#ifndef IG_EPOCH_H
#define IG_EPOCH_H
#include <stdint.h>

#define IG_EPOCH_MAX_READERS 256

/** Number of reader slots in use (loop threads), set once before they start. */
void ig_epoch_init(int readers);
/** A reader holds no snapshot pointer right now. */
void ig_epoch_quiescent(int reader);
/** A reader leaves for good (its thread ends): it never blocks reclamation again. */
void ig_epoch_offline(int reader);
/** Start a new epoch (after publishing a new snapshot); returns it. */
uint64_t ig_epoch_advance(void);
/** Queue p for free_fn(p) once no reader can hold it (single writer only). */
void ig_epoch_retire(void *p, void (*free_fn)(void *));
/** Free what is safe now; returns how many retired objects are still waiting. */
int ig_epoch_reclaim(void);
/** 1 when reader has not been quiescent since the newest epoch (it may be idle in poll). */
int ig_epoch_reader_behind(int reader);
/** Free everything retired, readers or not (at exit, after the readers are gone). */
void ig_epoch_drain(void);
#endif

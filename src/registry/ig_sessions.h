/* Sessions pinned to workers: a session's API key (the bearer its requests
 * carry) and its id both lead to the worker that holds the session's state.
 *
 * One writer (the control thread) changes the table; loop threads look keys
 * up without a lock, inside one callback at a time, exactly like the
 * registry snapshot (see ig_epoch.h). Entries are immutable: a change
 * replaces the entry, and the old one is freed once no reader can hold it.
 * Both indexes are open-addressing tables of entry pointers; a removed slot
 * becomes a tombstone, and the table is rebuilt (and the old arrays retired)
 * when tombstones and entries fill half of it. */
#ifndef IG_SESSIONS_H
#define IG_SESSIONS_H
#include <stddef.h>
#include <stdint.h>

#include "ig_registry.h"

/* AReaL's name for the admin key's own session (human-in-the-loop). */
#define IG_HITL_SESSION_ID "__hitl__"

typedef struct ig_session {
    ig_worker *w; /* referenced while the entry lives */
    uint64_t key_hash, id_hash;
    uint32_t key_len, id_len;
    int persistent;  /* the admin key's session: /remove_session keeps it */
    const char *key; /* both point into the entry's own allocation */
    const char *id;
} ig_session;

/* ---- the reader side: any thread, inside one callback (epoch-protected) ---- */

/** The session whose API key is key, or NULL. */
const ig_session *ig_sessions_by_key(const char *key, size_t len);
/** The session with this id, or NULL. */
const ig_session *ig_sessions_by_id(const char *id, size_t len);
/** Sessions in the table (a relaxed count). */
int ig_sessions_count(void);

/* ---- the writer side: control thread only ---- */

/** Pin key and id to w, replacing any session with the same key or the same
 * id. 0 or -ENOMEM. */
int ig_sessions_put(const char *key, size_t klen, const char *id, size_t idlen, ig_worker *w, int persistent);
/** Remove the session with this id: 1 removed, 0 none. */
int ig_sessions_remove_id(const char *id, size_t len);
/** Remove every session keep() says no to; returns how many. */
int ig_sessions_keep_only(int (*keep)(const ig_session *s, void *arg), void *arg);
/** Remove every session pinned to w (it left the fleet); returns how many. */
int ig_sessions_revoke_worker(const ig_worker *w);
/** Free everything at once (at exit, when no reader is left). */
void ig_sessions_shutdown(void);
#endif

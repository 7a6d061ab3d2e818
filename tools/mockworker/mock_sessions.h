/* The mock worker's AReaL data-proxy session endpoints (in-memory). */
#ifndef MOCK_SESSIONS_H
#define MOCK_SESSIONS_H
#include <stddef.h>

/** Answer path if it is /rl/start_session, /rl/set_reward,
 * /export_trajectories or /register_model: the status, with a JSON body in
 * *out (malloc'd); 0 when path is none of them. auth: the Authorization
 * value (may be NULL); admin: the admin key (NULL: any bearer is admin). */
int mock_sessions_handle(const char *path, const char *auth, size_t auth_len, const char *body,
                         size_t body_len, const char *admin, const char *worker_id, char **out);
/** 1: AReaL's shapes before its session rework (one session per start,
 * export by session_id); 0 (default): groups, export by session_ids. */
extern int mock_sessions_legacy;
/** A chat request arrived with this Authorization: count it on its session. */
void mock_sessions_note_chat(const char *auth, size_t auth_len, const char *admin);
#endif

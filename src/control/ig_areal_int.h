/* What ig_areal.c (AReaL's endpoints) shares with ig_areal_follow.c (the
 * same state made to match etcd's, with --etcd-endpoints). Control thread
 * only. */
#ifndef IG_AREAL_INT_H
#define IG_AREAL_INT_H
#include "../registry/ig_registry.h"

/** A session's entry in etcd (malloc'd JSON). */
char *ig_areal_session_value(const char *key, const ig_worker *w, int persistent, const char *group_id);
/** A registered model's entry in etcd (malloc'd JSON). */
char *ig_areal_model_value(ig_worker *const *ws, int n, const char *url, const char *api_key);

/** Remember a group's session ids (a repeat of the id replaces it). 0 or -ENOMEM. */
int ig_areal_group_put(const char *id, const ig_worker *w, char *const *sids, int n);
/** Forget every group (their sessions stay). */
void ig_areal_groups_clear(void);

/** Route the model name to ws (referenced) with AReaL's url and key; every
 * argument is taken, stored (its etcd entry) too. 0 or -ENOMEM (nothing taken). */
int ig_areal_route_set(char *name, ig_worker **ws, int n, char *url, char *api_key, char *stored);
int ig_areal_route_count(void);
const char *ig_areal_route_name(int i);
/** Its etcd entry as last written or read (NULL: none). */
const char *ig_areal_route_stored(int i);
void ig_areal_route_drop(int i);

/** 1 while an export's delete of this session is not in etcd yet. */
int ig_areal_forgotten(const char *id);
/** Ask etcd again to delete what exports revoked. */
void ig_areal_forget_pending(void);
#endif

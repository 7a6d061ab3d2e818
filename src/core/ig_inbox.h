/* A mailbox from any thread to one loop: a mutex-guarded stack of nodes and
 * the loop's wake-up. Senders push and wake; the loop takes everything at
 * once, in arrival order. The lock is held for a pointer swap only; nothing
 * on the routing path goes through an inbox (admin requests and their
 * answers do). */
#ifndef IG_INBOX_H
#define IG_INBOX_H
#include <uv.h>

#include "ig_wakeup.h"

typedef struct ig_inbox_node {
    struct ig_inbox_node *next;
} ig_inbox_node;

typedef struct ig_inbox {
    uv_mutex_t lock;
    ig_inbox_node *head; /* newest first, under lock */
    ig_wakeup *wake;     /* the receiving loop's, shared with its other wake-ups */
} ig_inbox;

/** wake: sent after every push. 0 or a negative errno code. */
int ig_inbox_init(ig_inbox *in, ig_wakeup *wake);
/** Any thread. */
void ig_inbox_push(ig_inbox *in, ig_inbox_node *n);
/** The receiving loop: every node pushed so far, oldest first (NULL: none). */
ig_inbox_node *ig_inbox_take(ig_inbox *in);
/** After the last push and take. */
void ig_inbox_destroy(ig_inbox *in);
#endif

#include "ig_inbox.h"

int ig_inbox_init(ig_inbox *in, ig_wakeup *wake)
{
    in->head = NULL;
    in->wake = wake;
    return uv_mutex_init(&in->lock);
}

void ig_inbox_push(ig_inbox *in, ig_inbox_node *n)
{
    uv_mutex_lock(&in->lock);
    n->next = in->head;
    in->head = n;
    uv_mutex_unlock(&in->lock);
    ig_wakeup_send(in->wake);
}

ig_inbox_node *ig_inbox_take(ig_inbox *in)
{
    uv_mutex_lock(&in->lock);
    ig_inbox_node *n = in->head, *prev = NULL;
    in->head = NULL;
    uv_mutex_unlock(&in->lock);
    while (n) { /* the stack is newest first */
        ig_inbox_node *next = n->next;
        n->next = prev;
        prev = n;
        n = next;
    }
    return prev;
}

void ig_inbox_destroy(ig_inbox *in)
{
    uv_mutex_destroy(&in->lock);
}

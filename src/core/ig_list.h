/* Intrusive circular doubly-linked list (no allocation to link or unlink). */
#ifndef IG_LIST_H
#define IG_LIST_H
#include <stddef.h>

typedef struct ig_list {
    struct ig_list *prev, *next;
} ig_list;

#define ig_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

static inline void ig_list_init(ig_list *l)
{
    l->prev = l->next = l;
}
static inline int ig_list_empty(const ig_list *l)
{
    return l->next == l;
}
static inline void ig_list_push_front(ig_list *l, ig_list *n)
{
    n->next = l->next;
    n->prev = l;
    l->next->prev = n;
    l->next = n;
}
static inline void ig_list_push_back(ig_list *l, ig_list *n)
{
    ig_list_push_front(l->prev, n);
}
static inline void ig_list_remove(ig_list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}
#endif

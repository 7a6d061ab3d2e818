#include "mock_kvcache.h"

#include <stdlib.h>

typedef struct node {
    uint64_t key;
    int prev, next; /* LRU list, most recent first; -1 ends */
    int hnext;      /* hash chain */
} node;

static node *nodes;
static int *heads; /* hash buckets: node index or -1 */
static int cap, used, mask, head = -1, tail = -1;

void mock_kv_init(long capacity_tokens)
{
    cap = (int)(capacity_tokens / MOCK_TOKENS_PER_BLOCK);
    if (cap <= 0)
        return;
    int nb = 1;
    while (nb < cap * 2)
        nb <<= 1;
    mask = nb - 1;
    nodes = calloc((size_t)cap, sizeof(*nodes));
    heads = malloc(sizeof(int) * (size_t)nb);
    if (!nodes || !heads) {
        cap = 0;
        return;
    }
    for (int i = 0; i < nb; i++)
        heads[i] = -1;
}

static void unlink_lru(int i)
{
    if (nodes[i].prev >= 0)
        nodes[nodes[i].prev].next = nodes[i].next;
    else
        head = nodes[i].next;
    if (nodes[i].next >= 0)
        nodes[nodes[i].next].prev = nodes[i].prev;
    else
        tail = nodes[i].prev;
}

static void push_front(int i)
{
    nodes[i].prev = -1;
    nodes[i].next = head;
    if (head >= 0)
        nodes[head].prev = i;
    head = i;
    if (tail < 0)
        tail = i;
}

static int find(uint64_t key)
{
    for (int i = heads[key & (uint64_t)mask]; i >= 0; i = nodes[i].hnext)
        if (nodes[i].key == key)
            return i;
    return -1;
}

static void unhash(int i)
{
    int *p = &heads[nodes[i].key & (uint64_t)mask];
    while (*p != i)
        p = &nodes[*p].hnext;
    *p = nodes[i].hnext;
}

/* the block is cached now and the most recently used */
static void touch(uint64_t key)
{
    int i = find(key);
    if (i >= 0) {
        unlink_lru(i);
        push_front(i);
        return;
    }
    if (used < cap) {
        i = used++;
    } else { /* evict the least recently used block */
        i = tail;
        unlink_lru(i);
        unhash(i);
    }
    nodes[i].key = key;
    nodes[i].hnext = heads[key & (uint64_t)mask];
    heads[key & (uint64_t)mask] = i;
    push_front(i);
}

long mock_kv_use(const ig_prefix_query *q, long *prompt_tokens)
{
    *prompt_tokens = (long)((q->len + 3) / 4);
    if (cap <= 0)
        return 0;
    int hit = 0;
    while (hit < q->n && find(q->key[hit]) >= 0)
        hit++;
    for (int i = 0; i < q->n; i++)
        touch(q->key[i]);
    long cached = (long)hit * MOCK_TOKENS_PER_BLOCK;
    return cached < *prompt_tokens ? cached : *prompt_tokens;
}

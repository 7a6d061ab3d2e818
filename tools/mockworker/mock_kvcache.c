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

/* FNV-1a over one block, chained: a block's key stands for the whole prefix up to it. */
static uint64_t block_key(const char *p, uint64_t prev)
{
    uint64_t h = prev ^ 14695981039346656037ull;
    for (int i = 0; i < MOCK_BLOCK_BYTES; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    return h ? h : 1;
}

long mock_kv_use(const char *text, size_t len, long *prompt_tokens)
{
    *prompt_tokens = (long)((len + 3) / 4);
    if (cap <= 0)
        return 0;
    size_t nblocks = len / MOCK_BLOCK_BYTES;
    int hit = 0, missed = 0;
    uint64_t key = 0;
    for (size_t b = 0; b < nblocks; b++) {
        key = block_key(text + b * MOCK_BLOCK_BYTES, key);
        if (!missed && find(key) >= 0)
            hit++;
        else
            missed = 1;
        touch(key);
    }
    long cached = (long)hit * MOCK_TOKENS_PER_BLOCK;
    return cached < *prompt_tokens ? cached : *prompt_tokens;
}

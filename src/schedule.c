/* Heaps, the transaction FIFO and retry backoff. */
#include <stdlib.h>

#include "common.h"
#include "schedule.h"

void walq__job_free(walq__job *job)
{
    if (job == NULL)
        return;
    free(job->queue);
    free(job->payload);
    free(job->last_error);
    free(job);
}

void walq__heap_init(walq__heap *h, walq__heap_less less)
{
    h->items = NULL;
    h->n = h->cap = 0;
    h->less = less;
}

void walq__heap_free(walq__heap *h)
{
    free(h->items);
    h->items = NULL;
    h->n = h->cap = 0;
}

static void heap_set(walq__heap *h, size_t i, walq__job *job)
{
    h->items[i] = job;
    job->heap_idx = i;
}

static void sift_up(walq__heap *h, size_t i)
{
    walq__job *job = h->items[i];

    while (i > 0) {
        size_t parent = (i - 1) / 2;

        if (!h->less(job, h->items[parent]))
            break;
        heap_set(h, i, h->items[parent]);
        i = parent;
    }
    heap_set(h, i, job);
}

static void sift_down(walq__heap *h, size_t i)
{
    walq__job *job = h->items[i];

    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, best = i;
        walq__job *bj = job;

        if (l < h->n && h->less(h->items[l], bj)) {
            best = l;
            bj = h->items[l];
        }
        if (r < h->n && h->less(h->items[r], bj)) {
            best = r;
            bj = h->items[r];
        }
        if (best == i)
            break;
        heap_set(h, i, bj);
        i = best;
    }
    heap_set(h, i, job);
}

int walq__heap_push(walq__heap *h, walq__job *job)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        walq__job **items = realloc(h->items, cap * sizeof(*items));

        if (items == NULL)
            return WALQ_ENOMEM;
        h->items = items;
        h->cap = cap;
    }
    h->items[h->n] = job;
    sift_up(h, h->n++);
    return 0;
}

walq__job *walq__heap_top(const walq__heap *h)
{
    return h->n ? h->items[0] : NULL;
}

void walq__heap_remove(walq__heap *h, walq__job *job)
{
    size_t i = job->heap_idx;
    walq__job *last;

    if (i >= h->n || h->items[i] != job)
        return;
    last = h->items[--h->n];
    if (i == h->n)
        return;
    heap_set(h, i, last);
    if (i > 0 && h->less(last, h->items[(i - 1) / 2]))
        sift_up(h, i);
    else
        sift_down(h, i);
}

walq__job *walq__heap_pop(walq__heap *h)
{
    walq__job *top = walq__heap_top(h);

    if (top != NULL)
        walq__heap_remove(h, top);
    return top;
}

int walq__ready_less(const walq__job *a, const walq__job *b)
{
    if (a->priority != b->priority)
        return a->priority < b->priority;
    return a->seq < b->seq;
}

int walq__timer_less(const walq__job *a, const walq__job *b)
{
    if (a->run_at != b->run_at)
        return a->run_at < b->run_at;
    return a->seq < b->seq;
}

walq__txn *walq__txnq_open(walq__txnq *q, uint64_t end_lsn)
{
    walq__txn *t = calloc(1, sizeof(*t));

    if (t == NULL)
        return NULL;
    t->end_lsn = t->through = end_lsn;
    t->open = 1;
    if (q->tail)
        q->tail->next = t;
    else
        q->head = t;
    q->tail = t;
    q->len++;
    return t;
}

static void pop_finished(walq__txnq *q)
{
    while (q->head != NULL && !q->head->open && q->head->outstanding == 0) {
        walq__txn *t = q->head;

        if (t->through > q->safe_lsn)
            q->safe_lsn = t->through;
        q->head = t->next;
        if (q->head == NULL)
            q->tail = NULL;
        q->len--;
        free(t);
    }
}

void walq__txnq_close(walq__txnq *q, walq__txn *t)
{
    t->open = 0;
    /*
     * An empty transaction right behind another one only extends how far that
     * one reaches; it needs no entry of its own.
     */
    if (t->outstanding == 0 && t == q->tail && q->head != t) {
        walq__txn *prev = q->head;

        while (prev->next != t)
            prev = prev->next;
        prev->through = t->through;
        prev->next = NULL;
        q->tail = prev;
        q->len--;
        free(t);
        return;
    }
    pop_finished(q);
}

void walq__txnq_record(walq__txnq *q, walq__txn *t)
{
    if (t->outstanding > 0)
        t->outstanding--;
    pop_finished(q);
}

void walq__txnq_idle(walq__txnq *q, uint64_t lsn)
{
    if (q->head == NULL && lsn > q->safe_lsn)
        q->safe_lsn = lsn;
}

void walq__txnq_free(walq__txnq *q)
{
    while (q->head) {
        walq__txn *t = q->head;

        q->head = t->next;
        free(t);
    }
    q->tail = NULL;
    q->len = 0;
}

#define IDSET_EMPTY INT64_MIN

static size_t idset_slot(const walq__idset *s, int64_t id)
{
    return (size_t)(((uint64_t)id * UINT64_C(0x9E3779B97F4A7C15)) >> 17) & (s->cap - 1);
}

static int idset_grow(walq__idset *s)
{
    size_t cap = s->cap ? s->cap * 2 : 1024;
    int64_t *keys = malloc(cap * sizeof(*keys)), *old = s->keys;
    size_t oldcap = s->cap;

    if (keys == NULL)
        return WALQ_ENOMEM;
    for (size_t i = 0; i < cap; i++)
        keys[i] = IDSET_EMPTY;
    s->keys = keys;
    s->cap = cap;
    s->n = 0;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i] != IDSET_EMPTY)
            walq__idset_add(s, old[i]);
    free(old);
    return 0;
}

int walq__idset_add(walq__idset *s, int64_t id)
{
    size_t i;

    /* Kept at most half full, so that probes stay short. */
    if ((s->n + 1) * 2 > s->cap && idset_grow(s) != 0)
        return WALQ_ENOMEM;
    for (i = idset_slot(s, id); s->keys[i] != IDSET_EMPTY; i = (i + 1) & (s->cap - 1))
        if (s->keys[i] == id)
            return 0;
    s->keys[i] = id;
    s->n++;
    return 0;
}

int walq__idset_has(const walq__idset *s, int64_t id)
{
    if (s->cap == 0)
        return 0;
    for (size_t i = idset_slot(s, id); s->keys[i] != IDSET_EMPTY; i = (i + 1) & (s->cap - 1))
        if (s->keys[i] == id)
            return 1;
    return 0;
}

void walq__idset_del(walq__idset *s, int64_t id)
{
    size_t i, j;

    if (s->cap == 0)
        return;
    for (i = idset_slot(s, id); s->keys[i] != id; i = (i + 1) & (s->cap - 1))
        if (s->keys[i] == IDSET_EMPTY)
            return;
    /* Backward shift: pull later keys of the run into the hole. */
    for (j = (i + 1) & (s->cap - 1); s->keys[j] != IDSET_EMPTY; j = (j + 1) & (s->cap - 1)) {
        size_t home = idset_slot(s, s->keys[j]);

        if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
            s->keys[i] = s->keys[j];
            i = j;
        }
    }
    s->keys[i] = IDSET_EMPTY;
    s->n--;
}

void walq__idset_clear(walq__idset *s)
{
    for (size_t i = 0; i < s->cap; i++)
        s->keys[i] = IDSET_EMPTY;
    s->n = 0;
}

void walq__idset_free(walq__idset *s)
{
    free(s->keys);
    s->keys = NULL;
    s->cap = s->n = 0;
}

static uint64_t next_random(uint64_t *state)
{
    /* splitmix64: plenty for jitter, and seedable in tests. */
    uint64_t z = (*state += UINT64_C(0x9E3779B97F4A7C15));

    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

int64_t walq__backoff_us(int attempt, double min_s, double max_s, uint64_t *rng)
{
    double base = min_s;
    double r;

    if (max_s < min_s)
        max_s = min_s;
    for (int i = 1; i < attempt && base < max_s; i++)
        base *= 2;
    if (base > max_s)
        base = max_s;
    /* Jitter between half and the whole delay spreads retries of a burst. */
    r = (double)(next_random(rng) >> 11) / (double)(UINT64_C(1) << 53);
    base = base / 2 + base / 2 * r;
    if (base < min_s)
        base = min_s;
    return (int64_t)(base * 1e6);
}

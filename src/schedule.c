/* Heaps, the transaction FIFO and retry backoff. */
#include <stdlib.h>
#include <string.h>

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
    t->prev = q->tail;
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
        else
            q->head->prev = NULL;
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
        walq__txn *prev = t->prev;

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

/* ------------------------------------------------------------------ */
/* The schedule: admission, timers and the outcome of an attempt       */

void walq__sched_init(walq__sched *s, const walq__sched_config *cfg, uint64_t seed)
{
    memset(s, 0, sizeof(*s));
    s->cfg = *cfg;
    s->rng = seed;
    walq__heap_init(&s->ready, walq__ready_less);
    walq__heap_init(&s->timers, walq__timer_less);
}

void walq__sched_clear(walq__sched *s)
{
    walq__job *job;

    while ((job = walq__heap_pop(&s->ready)) != NULL)
        walq__sched_forget(s, job);
    while ((job = walq__heap_pop(&s->timers)) != NULL)
        walq__sched_forget(s, job);
    walq__idset_clear(&s->live);
    s->in_memory = s->retry_timers = 0;
    s->bytes = 0;
}

void walq__sched_free(walq__sched *s)
{
    walq__sched_clear(s);
    walq__heap_free(&s->ready);
    walq__heap_free(&s->timers);
    walq__idset_free(&s->live);
}

walq__job *walq__sched_job(walq__sched *s, const walq__job_row *row)
{
    walq__job *job = calloc(1, sizeof(*job));

    if (job == NULL)
        return NULL;
    job->id = row->id;
    job->queue = walq__strdup(row->queue);
    job->payload = walq__strndup(row->payload, row->payload_len);
    job->payload_len = row->payload_len;
    job->priority = row->priority;
    job->max_attempts = row->max_attempts;
    job->attempts = row->attempts;
    job->run_at = row->run_at;
    job->has_dedup = row->has_dedup;
    job->generation = row->generation;
    job->pending_idx = -1;
    job->seq = ++s->seq;
    if (job->queue == NULL || job->payload == NULL || walq__idset_add(&s->live, row->id) != 0) {
        walq__job_free(job);
        return NULL;
    }
    s->bytes += job->payload_len;
    return job;
}

int walq__sched_has(const walq__sched *s, int64_t id)
{
    return walq__idset_has(&s->live, id);
}

void walq__sched_forget(walq__sched *s, walq__job *job)
{
    walq__idset_del(&s->live, job->id);
    s->bytes -= job->payload_len < s->bytes ? job->payload_len : s->bytes;
    walq__job_free(job);
}

void walq__sched_release(walq__sched *s, walq__job *job)
{
    s->in_memory--;
    walq__sched_forget(s, job);
}

static int make_ready(walq__sched *s, walq__job *job)
{
    job->state = WALQ__JOB_READY;
    s->in_memory++;
    return walq__heap_push(&s->ready, job) ? walq__error(WALQ_ENOMEM, NULL, "out of memory") : 0;
}

static int make_timer(walq__sched *s, walq__job *job, int retry)
{
    job->state = WALQ__JOB_TIMER;
    job->retry_timer = retry;
    if (retry)
        s->retry_timers++;
    return walq__heap_push(&s->timers, job) ? walq__error(WALQ_ENOMEM, NULL, "out of memory") : 0;
}

/*
 * A job scheduled for later than the timers in memory reach leaves memory
 * once its record commits; the table has it.
 */
static void offload(walq__sched *s, walq__job *job)
{
    job->state = WALQ__JOB_ACKING;
    s->timers_offloaded = 1;
    /*
     * One left to the table for want of room, not for its time: the window
     * of timers in memory ends before it, so that the next load reads it.
     */
    if (job->run_at <= s->timers_until)
        s->timers_until = job->run_at - 1;
}

int walq__sched_admit(walq__sched *s, walq__job *job, int64_t now_wall, int *record_scheduled)
{
    *record_scheduled = 0;
    if (job->run_at > now_wall + 1000) {
        *record_scheduled = 1;
        /*
         * Beyond the timers in memory, or no room for it: its record is
         * enough, and it comes back from the table nearer its time.
         */
        if (job->run_at > s->timers_until || walq__sched_full(s)) {
            s->in_memory++; /* until the record commits */
            offload(s, job);
            return 0;
        }
        return make_timer(s, job, 0);
    }
    return make_ready(s, job);
}

void walq__sched_reject(walq__sched *s, walq__job *job)
{
    job->state = WALQ__JOB_ACKING;
    s->in_memory++; /* until the record commits */
}

int walq__sched_timer(walq__sched *s, walq__job *job)
{
    return make_timer(s, job, job->attempts > 0);
}

int walq__sched_promote(walq__sched *s, int64_t now_wall)
{
    walq__job *job;

    while ((job = walq__heap_top(&s->timers)) != NULL && job->run_at <= now_wall) {
        int rc;

        walq__heap_pop(&s->timers);
        if (job->retry_timer)
            s->retry_timers--;
        job->retry_timer = 0;
        rc = make_ready(s, job);
        if (rc != 0)
            return rc;
    }
    return 0;
}

walq__job *walq__sched_next(walq__sched *s)
{
    return walq__heap_pop(&s->ready);
}

void walq__sched_unstart(walq__sched *s, walq__job *job)
{
    walq__sched_release(s, job);
}

walq__status walq__sched_decide(walq__sched *s, const walq__job *job, walq__verdict v,
                                int64_t *run_at)
{
    if (v == WALQ__VERDICT_DONE)
        return WALQ__ST_DONE;
    if (v == WALQ__VERDICT_DEAD || job->attempts >= job->max_attempts)
        return WALQ__ST_DEAD;
    *run_at = walq__wall_us() + walq__backoff_us(job->attempts, (double)s->cfg.backoff_min_us / 1e6,
                                                 (double)s->cfg.backoff_max_us / 1e6, &s->rng);
    return WALQ__ST_SCHEDULED;
}

int walq__sched_settle(walq__sched *s, walq__job *job, walq__status st, int64_t run_at,
                       const char *err)
{
    switch (st) {
    case WALQ__ST_DONE:
        job->state = WALQ__JOB_ACKING;
        return 0;
    case WALQ__ST_DEAD:
        walq__warn(s->cfg.log, "job %lld is dead after %d attempt%s: %s", (long long)job->id,
                   job->attempts, job->attempts == 1 ? "" : "s", err ? err : "");
        job->state = WALQ__JOB_ACKING;
        return 0;
    default:
        job->run_at = run_at;
        walq__debug(s->cfg.log, "job %lld attempt %d failed, retrying: %s", (long long)job->id,
                    job->attempts, err ? err : "");
        if (run_at > s->timers_until || walq__sched_full(s)) {
            offload(s, job);
            return 0;
        }
        s->in_memory--;
        return make_timer(s, job, 1);
    }
}

walq__job *walq__sched_find_waiting(walq__sched *s, int64_t id)
{
    walq__heap *heaps[2] = {&s->ready, &s->timers};

    /* A linear look: commands are rare, and this keeps jobs free of an index. */
    for (int k = 0; k < 2; k++)
        for (size_t i = 0; i < heaps[k]->n; i++)
            if (heaps[k]->items[i]->id == id)
                return heaps[k]->items[i];
    return NULL;
}

void walq__sched_withdraw(walq__sched *s, walq__job *job)
{
    if (job->state == WALQ__JOB_TIMER) {
        walq__heap_remove(&s->timers, job);
        if (job->retry_timer)
            s->retry_timers--;
        s->in_memory++; /* counted again until its release is acked */
    } else {
        walq__heap_remove(&s->ready, job);
    }
    job->state = WALQ__JOB_ACKING;
}

int walq__sched_full(const walq__sched *s)
{
    return s->live.n >= s->cfg.max_in_flight || s->bytes >= s->cfg.max_bytes;
}

size_t walq__sched_room(const walq__sched *s)
{
    return walq__sched_full(s) ? 0 : s->cfg.max_in_flight - s->live.n;
}

int64_t walq__sched_next_due(const walq__sched *s, int64_t now_mono, int64_t now_wall)
{
    const walq__job *top = walq__heap_top(&s->timers);
    int64_t due;

    if (top == NULL)
        return 0;
    due = top->run_at - now_wall;
    return now_mono + (due > 0 ? due : 0);
}

void walq__sched_timers_loaded(walq__sched *s, int64_t until, int later_exist)
{
    s->timers_until = until;
    s->timers_offloaded = later_exist;
}

int walq__sched_timers_wanted(const walq__sched *s, int64_t now_wall)
{
    return s->timers_offloaded && now_wall + s->cfg.timer_horizon_us / 2 >= s->timers_until;
}

int walq__sched_idle(const walq__sched *s)
{
    return s->in_memory == 0 && s->retry_timers == 0;
}

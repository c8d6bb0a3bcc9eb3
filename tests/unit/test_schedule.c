/* Unit tests of the schedule stage: heaps, the transaction FIFO, backoff. */
#include <check.h>
#include <stdlib.h>

#include "schedule.h"

static walq__job *mk(int64_t id, int prio, uint64_t seq, int64_t run_at)
{
    walq__job *j = calloc(1, sizeof(*j));

    j->id = id;
    j->priority = prio;
    j->seq = seq;
    j->run_at = run_at;
    j->pending_idx = -1;
    return j;
}

START_TEST(ready_heap_orders_by_priority_then_arrival)
{
    walq__heap h;
    int64_t want[] = {3, 5, 1, 2, 4};
    walq__job *jobs[5] = {mk(1, 0, 1, 0), mk(2, 0, 2, 0), mk(3, -5, 3, 0), mk(4, 7, 4, 0),
                          mk(5, -5, 5, 0)};

    walq__heap_init(&h, walq__ready_less);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(walq__heap_push(&h, jobs[i]), 0);
    for (int i = 0; i < 5; i++) {
        walq__job *j = walq__heap_pop(&h);

        ck_assert_ptr_nonnull(j);
        ck_assert_int_eq(j->id, want[i]);
        free(j);
    }
    ck_assert_ptr_null(walq__heap_pop(&h));
    walq__heap_free(&h);
}
END_TEST

START_TEST(heap_remove_keeps_order)
{
    walq__heap h;
    walq__job *jobs[200];
    int64_t last = -1;

    walq__heap_init(&h, walq__timer_less);
    for (int i = 0; i < 200; i++) {
        jobs[i] = mk(i, 0, (uint64_t)i, (int64_t)((i * 7919) % 200));
        walq__heap_push(&h, jobs[i]);
    }
    /* Remove every third job from the middle of the heap. */
    for (int i = 0; i < 200; i += 3) {
        walq__heap_remove(&h, jobs[i]);
        free(jobs[i]);
    }
    ck_assert_uint_eq(h.n, 200 - 67);
    while (h.n) {
        walq__job *j = walq__heap_pop(&h);

        ck_assert_int_ge(j->run_at, last);
        last = j->run_at;
        free(j);
    }
    walq__heap_free(&h);
}
END_TEST

START_TEST(txnq_cursor_waits_for_oldest)
{
    walq__txnq q = {0};
    walq__txn *a, *b, *c;

    q.safe_lsn = 100;
    a = walq__txnq_open(&q, 200);
    a->outstanding = 2;
    walq__txnq_close(&q, a);
    b = walq__txnq_open(&q, 300);
    b->outstanding = 1;
    walq__txnq_close(&q, b);
    /* An empty transaction folds into the one before it. */
    c = walq__txnq_open(&q, 400);
    walq__txnq_close(&q, c);
    ck_assert_uint_eq(q.len, 2);

    walq__txnq_record(&q, b);
    ck_assert_uint_eq(q.safe_lsn, 100); /* a is not done: nothing moves */
    walq__txnq_record(&q, a);
    ck_assert_uint_eq(q.safe_lsn, 100);
    walq__txnq_record(&q, a);
    ck_assert_uint_eq(q.safe_lsn, 400); /* a, b and the empty one behind b */
    ck_assert_ptr_null(q.head);
    walq__txnq_free(&q);
}
END_TEST

START_TEST(txnq_open_transaction_blocks)
{
    walq__txnq q = {0};
    walq__txn *a = walq__txnq_open(&q, 500);

    a->outstanding = 1;
    walq__txnq_record(&q, a);
    /* Still receiving jobs: it cannot be finished yet. */
    ck_assert_uint_eq(q.safe_lsn, 0);
    walq__txnq_close(&q, a);
    ck_assert_uint_eq(q.safe_lsn, 500);
    walq__txnq_idle(&q, 900);
    ck_assert_uint_eq(q.safe_lsn, 900);
    walq__txnq_free(&q);
}
END_TEST

START_TEST(txnq_idle_ignored_while_busy)
{
    walq__txnq q = {0};
    walq__txn *a = walq__txnq_open(&q, 500);

    a->outstanding = 1;
    walq__txnq_close(&q, a);
    walq__txnq_idle(&q, 900);
    ck_assert_uint_eq(q.safe_lsn, 0);
    walq__txnq_free(&q);
}
END_TEST

/*
 * Empty transactions behind a long queue fold into its tail, each without a
 * walk of the queue, and the cursor then reaches the last of them.
 */
START_TEST(txnq_empty_transactions_fold_into_the_tail)
{
    walq__txnq q = {0};
    enum { BUSY = 50000, EMPTY = 50000 };
    walq__txn **busy = calloc(BUSY, sizeof(*busy));

    ck_assert_ptr_nonnull(busy);
    for (int i = 0; i < BUSY; i++) {
        busy[i] = walq__txnq_open(&q, 100 + (uint64_t)i);
        busy[i]->outstanding = 1;
        walq__txnq_close(&q, busy[i]);
    }
    for (int i = 0; i < EMPTY; i++)
        walq__txnq_close(&q, walq__txnq_open(&q, 100 + BUSY + (uint64_t)i));
    ck_assert_uint_eq(q.len, BUSY);
    ck_assert_uint_eq(q.tail->through, 100 + BUSY + EMPTY - 1);
    for (int i = 0; i < BUSY; i++)
        walq__txnq_record(&q, busy[i]);
    ck_assert_ptr_null(q.head);
    ck_assert_uint_eq(q.safe_lsn, 100 + BUSY + EMPTY - 1);
    walq__txnq_free(&q);
    free(busy);
}
END_TEST

START_TEST(backoff_grows_within_bounds)
{
    uint64_t rng = 42;

    for (int attempt = 1; attempt < 40; attempt++) {
        int64_t d = walq__backoff_us(attempt, 0.5, 30.0, &rng);
        double expect = 0.5;

        for (int i = 1; i < attempt && expect < 30.0; i++)
            expect *= 2;
        if (expect > 30.0)
            expect = 30.0;
        ck_assert_int_ge(d, (int64_t)(0.5e6));
        ck_assert_int_le(d, (int64_t)(expect * 1e6) + 1);
        ck_assert_int_ge(d, (int64_t)(expect / 2 * 1e6) - 1);
    }
    ck_assert_int_eq(walq__backoff_us(3, 0.0, 0.0, &rng), 0);
}
END_TEST

START_TEST(idset_matches_a_reference)
{
    walq__idset set = {0};
    static unsigned char ref[20000];
    uint64_t rng = 7;

    /* Random adds and deletes over a small id range force long probe runs. */
    for (int i = 0; i < 200000; i++) {
        int64_t id = (int64_t)((rng = rng * 6364136223846793005ULL + 1) >> 33) % 20000 - 5;
        int del = (rng >> 20) & 1;

        if (id < 0)
            id = -id * 1000003; /* some large and negative-looking keys too */
        if (del) {
            walq__idset_del(&set, id);
            if (id < 20000)
                ref[id] = 0;
        } else {
            ck_assert_int_eq(walq__idset_add(&set, id), 0);
            if (id < 20000)
                ref[id] = 1;
        }
        if (id < 20000)
            ck_assert_int_eq(walq__idset_has(&set, id), ref[id]);
    }
    for (int64_t id = 0; id < 20000; id++)
        ck_assert_int_eq(walq__idset_has(&set, id), ref[id]);
    walq__idset_free(&set);
}
END_TEST

static Suite *schedule_suite(void)
{
    Suite *s = suite_create("schedule");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, ready_heap_orders_by_priority_then_arrival);
    tcase_add_test(tc, heap_remove_keeps_order);
    tcase_add_test(tc, txnq_cursor_waits_for_oldest);
    tcase_add_test(tc, txnq_open_transaction_blocks);
    tcase_add_test(tc, txnq_idle_ignored_while_busy);
    tcase_add_test(tc, txnq_empty_transactions_fold_into_the_tail);
    tcase_add_test(tc, backoff_grows_within_bounds);
    tcase_add_test(tc, idset_matches_a_reference);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(schedule_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

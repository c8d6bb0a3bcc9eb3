#!/usr/bin/env python3
"""Prints the table of a bench/run.sh run from its results file.

    report.py [--machine MACHINE.tsv] RESULTS.tsv
    report.py --best-skip RESULTS.tsv     # "VARIANT CLIENTS" of the fastest drain

RESULTS.tsv has one line per figure and round: SECTION, NAME, ROUND, VALUE
(tab-separated), as bench/lib/common.sh's `result` writes them.  Every
figure is printed as the median of its rounds with [min .. max]; every
ratio is the ratio of two medians of this run, with the range of the
per-round ratios after it.
"""
import statistics
import sys

R = {}  # (section, name) -> {round: value}


def load(path):
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 4:
                continue
            sec, name, rnd, val = parts
            R.setdefault((sec, name), {})[int(rnd)] = val


def nums(sec, name):
    out = {}
    for rnd, v in R.get((sec, name), {}).items():
        try:
            out[rnd] = float(v)
        except ValueError:
            pass
    return out


def med(sec, name):
    v = list(nums(sec, name).values())
    return statistics.median(v) if v else None


def text(sec, name):
    v = R.get((sec, name), {})
    return v[min(v)] if v else None


def fmt(x, digits):
    if x is None:
        return "-"
    if digits == 0:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def cell(sec, name, digits=0, spread=True):
    """median [min .. max] of a figure."""
    v = list(nums(sec, name).values())
    if not v:
        return "-"
    m = fmt(statistics.median(v), digits)
    if not spread or len(v) < 2:
        return m
    return f"{m} [{fmt(min(v), digits)} .. {fmt(max(v), digits)}]"


def ratio(sec_a, a, sec_b, b, per_round_b=None):
    """Ratio of the medians of a and b, and the range of per-round ratios.
    per_round_b: {round: value} to divide by instead of b's rounds."""
    ma, mb = med(sec_a, a), None
    rb = per_round_b if per_round_b is not None else nums(sec_b, b)
    if rb:
        mb = statistics.median(rb.values())
    if ma is None or not mb:
        return None, "-"
    r = ma / mb
    ra = nums(sec_a, a)
    per = [ra[k] / rb[k] for k in ra if k in rb and rb[k]]
    s = f"{r:.2f}"
    if len(per) >= 2:
        s += f" [{min(per):.2f} .. {max(per):.2f}]"
    return r, s


def verdict(value, op, target):
    if value is None:
        return "n/a (not measured)"
    ok = value >= target if op == ">=" else value <= target
    return "MET" if ok else "MISSED"


def row(cols, widths):
    return "  ".join(str(c).ljust(w) for c, w in zip(cols, widths)).rstrip()


def table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    print("  " + row(header, widths))
    for r in rows:
        print("  " + row(r, widths))


def target_line(label, value_text, target_text, v):
    print(f"  {label:<50} {value_text:<24} target {target_text:<10} {v}")


def skip_configs():
    cfgs = set()
    for sec, name in R:
        if sec == "drain" and name.startswith("skip_") and name.endswith(".rate"):
            cfgs.add(name[: -len(".rate")])
    return sorted(cfgs, key=lambda c: (c.split("_")[1], int(c.split("_")[2])))


def best_skip(variant=None):
    """The fastest configuration in the drain, of one variant or of all."""
    best, rate = None, -1
    for c in skip_configs():
        if variant is not None and c.split("_")[1] != variant:
            continue
        m = med("drain", c + ".rate")
        if m is not None and m > rate:
            best, rate = c, m
    return best


# The two SKIP LOCKED workers the targets are taken against: the one issue 5
# describes (claim 100 in one transaction, ack them in another: two dead
# tuples per job), and the fastest one written here (claim and ack in one
# transaction: one dead tuple per job).
BASELINES = [("update", "issue's worker (UPDATE-claim + DELETE-ack)"),
             ("delete", "fastest worker (DELETE-claim)")]


def baselines():
    """(label, best drain configuration) of each baseline that ran."""
    found = [(label, best_skip(v)) for v, label in BASELINES]
    return [(label, cfg) for label, cfg in found if cfg]


def skip_label(cfg):
    _, variant, clients = cfg.split("_")
    kind = "DELETE-claim" if variant == "delete" else "UPDATE-claim + DELETE-ack"
    return f"SKIP LOCKED {kind}, {clients} clients"


# ---------------------------------------------------------------------------


# The stream readers of the drain, in the order of the table: (key, label).
# The keys of the backlog in single-row transactions have the prefix tx1_.
READERS = [("recvlogical", "pg_recvlogical, wal2json, to /dev/null"),
           ("walq", "walq consume --plugin wal2json --drain --noop"),
           ("recvlogical_pgoutput", "pg_recvlogical, pgoutput, walq's publication, to /dev/null"),
           ("walq_pgoutput", "walq consume --drain --noop (pgoutput)")]


def backlog_jobs(prefix):
    """The jobs of a drain backlog, from walq's time and rate."""
    secs = med("drain", prefix + "walq.secs")
    rate = med("drain", prefix + "walq.rate")
    return round(secs * rate, -3 if prefix == "" else -2) if secs and rate else None


def reader_row(key, label):
    return [label, cell("drain", key + ".rate"),
            cell("drain", key + ".server_cpu", 1),
            cell("drain", key + ".client_cpu", 1, spread=False),
            cell("drain", key + ".vacuum_cpu", 1, spread=False),
            cell("drain", key + ".dead_made", 2, spread=False),
            cell("drain", key + ".dead_left", 0, spread=False)]


READER_HEADER = ["reader", "jobs/s", "server CPU ms/1k", "consumer CPU", "VACUUM after",
                 "dead tuples/job", "n_dead_tup left"]


def plugin_lines(prefix, size):
    """The pgoutput targets and ratios of one backlog: walq on pgoutput
    against pg_recvlogical on pgoutput (target >= 0.9), against walq on
    wal2json, and pg_recvlogical's two plugins against each other."""
    r, s = ratio("drain", prefix + "walq_pgoutput.rate", "drain", prefix + "recvlogical_pgoutput.rate")
    target_line(f"{size}, pgoutput: walq / pg_recvlogical", s, ">= 0.9", verdict(r, ">=", 0.9))
    _, s = ratio("drain", prefix + "walq_pgoutput.rate", "drain", prefix + "walq.rate")
    print(f"  {size + ', walq: pgoutput / wal2json':<50} {s}")
    _, s = ratio("drain", prefix + "recvlogical_pgoutput.rate", "drain", prefix + "recvlogical.rate")
    print(f"  {size + ', pg_recvlogical: pgoutput / wal2json':<50} {s}")


def recorded_line(prefix, jobs):
    short = []
    for key, _ in READERS:
        if key.startswith("walq"):
            short += [f"{key} round {k}" for k, v in nums("drain", prefix + key + ".recorded").items()
                      if v != jobs]
    if jobs and any(nums("drain", prefix + k + ".recorded") for k, _ in READERS):
        print(f"  walq recorded every job done: {'no: ' + ', '.join(short) if short else 'yes'}")
    for key, _ in READERS:
        if R.get(("drain", prefix + key + ".slot_recreated")):
            print(f"  WARNING: {prefix + key}: walq recreated its slot and read the backlog from the table")


def section_drain():
    if not any(sec == "drain" for sec, _ in R):
        return
    jobs = backlog_jobs("")
    print(f"1. Drain of a {fmt(jobs, 0)}-job backlog in transactions of 1000 rows, "
          "published first, then consumed")
    print()
    names = list(READERS) + [(c, skip_label(c)) for c in skip_configs()]
    best = best_skip()
    rows = [reader_row(key, label + (" (best)" if key == best else "")) for key, label in names]
    table(READER_HEADER, rows)
    print()
    print("  server CPU: all server processes during consumption (walsender, backends, and")
    print("  background processes), ms per 1000 jobs; consumer CPU: the client process, ms/1k;")
    print("  VACUUM after: the server CPU of vacuuming the table the consumer wrote, ms/1k.")
    print("  The four stream readers read the same WAL range; the SKIP LOCKED lines and issue 5's")
    print("  targets below are against walq on wal2json, as in the runs before pgoutput.")
    print()
    r, s = ratio("drain", "walq.rate", "drain", "recvlogical.rate")
    target_line("drain rate, wal2json: walq / pg_recvlogical", s, ">= 0.8", verdict(r, ">=", 0.8))
    for label, cfg in baselines():
        r, s = ratio("drain", "walq.rate", "drain", cfg + ".rate")
        target_line(f"drain rate: walq / SKIP LOCKED {label.split(' (')[0]}", s, ">= 1.8",
                    verdict(r, ">=", 1.8))
    for label, cfg in baselines():
        print(f"    SKIP LOCKED {label}: best at {cfg.split('_')[2]} clients")
    r, s = ratio("drain", "recvlogical.rate", "drain", best + ".rate") if best else (None, "-")
    print(f"    (decoding alone, pg_recvlogical / SKIP LOCKED fastest: {s})")
    if R.get(("drain", "walq_pgoutput.rate")):
        plugin_lines("", "1000-row tx")
    dm, dl = med("drain", "walq.dead_made"), med("drain", "walq.dead_left")
    dead = None if dm is None else max(dm, dl or 0)
    target_line("walq.jobs dead tuples from consumption",
                f"{fmt(dm, 3)}/job, {fmt(dl, 0)} left", "0", verdict(dead, "<=", 0))
    print(f"  publishing the backlog (pgbench, one client, 1000 jobs per transaction): "
          f"{cell('drain', 'publish.rate')} jobs/s")
    recorded_line("", jobs)
    print()
    section_drain_tx1()


def section_drain_tx1():
    """The four stream readers over a backlog in single-row transactions."""
    if not R.get(("drain", "tx1_walq.rate")):
        return
    jobs = backlog_jobs("tx1_")
    print(f"1b. The same readers over a {fmt(jobs, 0)}-job backlog in single-row transactions")
    print()
    table(READER_HEADER, [reader_row("tx1_" + key, label) for key, label in READERS])
    print()
    print("  server CPU, consumer CPU and VACUUM after: as in 1, per 1000 jobs (and transactions).")
    print()
    r, s = ratio("drain", "tx1_walq.rate", "drain", "tx1_recvlogical.rate")
    print(f"  {'1-row tx, wal2json: walq / pg_recvlogical':<50} {s}")
    plugin_lines("tx1_", "1-row tx")
    print(f"  publishing the backlog (pgbench, 4 clients, synchronous_commit off, one job per "
          f"transaction): {cell('drain', 'tx1_publish.rate')} jobs/s")
    recorded_line("tx1_", jobs)
    print()


def section_cpu():
    best = best_skip()
    if not best and not any(sec == "subscriber" for sec, _ in R):
        return
    print("3. Server CPU on the primary per 1000 jobs consumed, beyond publishing "
          "(the backlog is published first)")
    print()
    rows = []
    for label, cfg in baselines():
        rows.append([skip_label(cfg), cell("drain", cfg + ".server_cpu", 1),
                     cell("drain", cfg + ".vacuum_cpu", 1, spread=False), "-", "-"])
    if best:
        rows.append(["walq, slot on the primary (part 1's drain, wal2json)",
                     cell("drain", "walq.server_cpu", 1),
                     cell("drain", "walq.vacuum_cpu", 1, spread=False), "-", "-"])
        if R.get(("drain", "walq_pgoutput.server_cpu")):
            rows.append(["walq, slot on the primary (part 1's drain, pgoutput)",
                         cell("drain", "walq_pgoutput.server_cpu", 1),
                         cell("drain", "walq_pgoutput.vacuum_cpu", 1, spread=False), "-", "-"])
    for g in (1, 3):
        if R.get(("subscriber", f"g{g}.primary_cpu")):
            rows.append([f"walq, subscriber topology, {g} group{'s' if g > 1 else ''}",
                         cell("subscriber", f"g{g}.primary_cpu", 1), "-",
                         cell("subscriber", f"g{g}.source_cpu", 1),
                         cell("subscriber", f"g{g}.rate")])
    table(["consumer", "primary CPU ms/1k", "+ VACUUM after", "source CPU ms/1k",
           "jobs consumed/s"], rows)
    print()
    print("  all server processes (walsenders, backends, background processes, exited ones too);")
    print("  subscriber topology: per 1000 jobs consumed by a group (3 groups consume each job")
    print("  3 times), read until the subscription's walsender has sent the acks' WAL; source:")
    print("  the server holding the slots.")
    print()
    for label, cfg in baselines():
        short = label.split(" (")[0]
        print(f"  against SKIP LOCKED {label}, {cfg.split('_')[2]} clients:")
        r, s = ratio("drain", "walq.server_cpu", "drain", cfg + ".server_cpu")
        target_line("  primary topology: walq / SKIP LOCKED", s, "<= 0.333", verdict(r, "<=", 1 / 3))
        wv = {k: v + nums("drain", "walq.vacuum_cpu").get(k, 0)
              for k, v in nums("drain", "walq.server_cpu").items()}
        sv = {k: v + nums("drain", cfg + ".vacuum_cpu").get(k, 0)
              for k, v in nums("drain", cfg + ".server_cpu").items()}
        if wv and sv:
            rr = statistics.median(wv.values()) / statistics.median(sv.values())
            per = [wv[k] / sv[k] for k in wv if k in sv and sv[k]]
            s = f"{rr:.2f}" + (f" [{min(per):.2f} .. {max(per):.2f}]" if len(per) > 1 else "")
            target_line("    the same, VACUUM after included", s, "<= 0.333", verdict(rr, "<=", 1 / 3))
        r, s = ratio("drain", "recvlogical.server_cpu", "drain", cfg + ".server_cpu")
        print(f"    (decoding alone, pg_recvlogical / SKIP LOCKED {short}: {s})")
        for g in (1, 3):
            if R.get(("subscriber", f"g{g}.primary_cpu")):
                r, s = ratio("subscriber", f"g{g}.primary_cpu", "drain", cfg + ".server_cpu")
                target_line(f"  subscriber, {g} group{'s' if g > 1 else ''}: walq / SKIP LOCKED",
                            s, "<= 0.333", verdict(r, "<=", 1 / 3))
    if R.get(("subscriber", "g3.primary_cpu")) and R.get(("subscriber", "g1.primary_cpu")):
        r, s = ratio("subscriber", "g3.primary_cpu", "subscriber", "g1.primary_cpu")
        ok = None if r is None else abs(r - 1) <= 0.2
        target_line("subscriber: per job consumed, 3 groups / 1", s, "1 (+-20%)",
                    "n/a" if ok is None else ("MET" if ok else "MISSED"))
        rec = {**{("g1", k): v for k, v in nums("subscriber", "g1.recorded").items()},
               **{("g3", k): v for k, v in nums("subscriber", "g3.recorded").items()}}
        sub_jobs = None
        if med("subscriber", "g1.recorded"):
            sub_jobs = med("subscriber", "g1.recorded")
        short = [k for k, v in rec.items()
                 if sub_jobs and v != sub_jobs * (3 if k[0] == "g3" else 1)]
        print(f"  subscriber topology, every job recorded done in every group: "
              f"{'no: ' + str(short) if short else 'yes'}")
    print()


def keeps_up(key):
    """The lag at the producer's end is at most 1.5 times the lag at its
    middle, plus 0.1 s of production (a lag that grows with time is a
    consumer that does not keep up; a constant one is the pipeline's depth)."""
    lm, le, pr = (med("e2e", key + x) for x in (".lag_mid", ".lag_end", ".producer_rate"))
    if lm is None or le is None or pr is None:
        return None
    return le <= 1.5 * lm + 0.1 * pr


def section_e2e():
    if not any(sec == "e2e" for sec, _ in R):
        return
    skips = [(v, label, text("e2e", f"skip_{v}.clients")) for v, label in BASELINES
             if R.get(("e2e", f"skip_{v}.rate"))]
    jobs = None
    if med("e2e", "walq.secs") and med("e2e", "walq.rate"):
        jobs = round(med("e2e", "walq.secs") * med("e2e", "walq.rate"), -3)
    print(f"2. Producer and consumer at once: {fmt(jobs, 0)} jobs, one producer inserting "
          "1000 per transaction as fast as it can")
    print()
    rows = []
    labels = [("walq", "walq consume --noop")]
    labels += [(f"skip_{v}", skip_label(f"skip_{v}_{n}")) for v, _, n in skips]
    labels += [("pgq", f"PgQ + pgqd (ticker_period {text('e2e', 'pgq.ticker_period')} s)")]
    for key, label in labels:
        ok = keeps_up(key)
        keeps = "-" if ok is None else "yes" if ok else "no, lag grows"
        rows.append([label, cell("e2e", key + ".rate"), cell("e2e", key + ".producer_rate"),
                     cell("e2e", key + ".tail_secs", 2, spread=False),
                     cell("e2e", key + ".lag_mid", 0, spread=False),
                     cell("e2e", key + ".lag_end", 0, spread=False),
                     cell("e2e", key + ".lag_max", 0, spread=False), keeps,
                     cell("e2e", key + ".server_cpu", 1, spread=False)])
    table(["consumer", "jobs/s end to end", "producer jobs/s", "tail s", "lag mid",
           "lag end", "lag max", "keeps up", "server CPU ms/1k"], rows)
    print()
    print("  end to end: jobs / (last completion - producer start); tail: last completion -")
    print("  producer end; lag: jobs published, not yet completed, at the middle and the end of")
    print("  the producer's run (keeps up: lag end <= 1.5 x lag mid + 0.1 s of production);")
    print("  server CPU includes publishing.")
    print()
    for v, label, _ in skips:
        r, s = ratio("e2e", "walq.rate", "e2e", f"skip_{v}.rate")
        target_line(f"end to end: walq / SKIP LOCKED {label.split(' (')[0]}", s, ">= 1.8",
                    verdict(r, ">=", 1.8))
    r, s = ratio("e2e", "walq.rate", "e2e", "pgq.rate")
    target_line("end to end: walq / PgQ", s, ">= 2", verdict(r, ">=", 2))
    rec = nums("e2e", "walq.recorded")
    if rec and jobs:
        short = [k for k, v in rec.items() if v != jobs + 1]
        print(f"  walq recorded every job done (and the end marker): "
              f"{'no, rounds ' + str(short) if short else 'yes'}")
    lm, le = med("e2e", "walq.lag_mid"), med("e2e", "walq.lag_end")
    ok = keeps_up("walq")
    if ok is not None:
        target_line("walq keeps up (lag bounded)", f"mid {fmt(lm, 0)}, end {fmt(le, 0)}", "yes",
                    "MET" if ok else "MISSED")
    print()


def derive_latency_cpu():
    """The consumers' share of the server CPU in the latency runs: each run's
    minus that of publishing alone (method none) in the same round."""
    for sec, name in list(R):
        if sec != "latency" or not name.endswith(".server_cpu") or name.startswith("none"):
            continue
        key = name[: -len(".server_cpu")]
        sync = "off" if "_sync_off" in key else "on"
        base = nums("latency", f"none_sync_{sync}.server_cpu")
        own = nums("latency", name)
        R[("latency", key + ".consumer_cpu")] = {
            k: f"{v - base[k]:.1f}" for k, v in own.items() if k in base}


def section_latency():
    if not any(sec == "latency" for sec, _ in R):
        return
    derive_latency_cpu()
    print(f"4. Latency from commit to handler start, {text('latency', 'config')}, "
          "single-row jobs (ms)")
    print()
    rows = []

    def add(label, n, sync):
        rows.append([label, sync, cell("latency", n + ".p50", 3), cell("latency", n + ".p99", 3),
                     cell("latency", n + ".max", 1, spread=False),
                     cell("latency", n + ".consumer_cpu", 1),
                     cell("latency", n + ".missing", 0, spread=False)])

    for key, label in [("walq", "walq, C API callback"),
                       ("notify", "LISTEN/NOTIFY + SKIP LOCKED claim"),
                       ("poll", "SKIP LOCKED polling every 100 ms")]:
        for sync in ("on", "off"):
            add(label if sync == "on" else "", f"{key}_sync_{sync}", sync)
    if R.get(("latency", "walq_sync_off_wwd10.p50")):
        add("walq, wal_writer_delay = 10ms", "walq_sync_off_wwd10", "off")
    table(["consumer", "producer synchronous_commit", "p50", "p99", "max",
           "server CPU ms/1k beyond publishing", "lost"], rows)
    print()
    print("  latency: handler start - commit acknowledged to the producer (one clock);")
    print("  server CPU beyond publishing: the run's server CPU minus that of publishing the same")
    print(f"  jobs with no consumer ({cell('latency', 'none_sync_on.server_cpu', 1)} ms/1k with "
          f"synchronous_commit on, {cell('latency', 'none_sync_off.server_cpu', 1)} off), "
          "so it is noisy;")
    print("  the producer's own commit (statement sent to commit acknowledged): p50 "
          f"{cell('latency', 'walq_sync_on.commit_p50', 3)} ms with synchronous_commit on, "
          f"{cell('latency', 'walq_sync_off.commit_p50', 3)} ms off.")
    print()
    p50, p99 = med("latency", "walq_sync_on.p50"), med("latency", "walq_sync_on.p99")
    target_line("walq p50, producer synchronous_commit on", fmt(p50, 3) + " ms", "<= 1 ms",
                verdict(p50, "<=", 1))
    target_line("walq p99, producer synchronous_commit on", fmt(p99, 3) + " ms", "<= 5 ms",
                verdict(p99, "<=", 5))
    _, s = ratio("latency", "notify_sync_on.consumer_cpu", "latency", "walq_sync_on.consumer_cpu")
    print(f"  server CPU beyond publishing, LISTEN/NOTIFY / walq: {s}")
    print()


def section_backlog():
    if not any(sec == "backlog" for sec, _ in R):
        return
    jobs = med("backlog", "drain.done")
    print(f"5. Consumer memory with a backlog of {fmt(jobs, 0)} jobs in the slot "
          "(published in 4 transactions)")
    print()
    mib = lambda k: None if med("backlog", k) is None else med("backlog", k) / 1024
    slow_peak, drain_peak = mib("slow.peak_kib"), mib("drain.peak_kib")
    rows = [["slow exec handler (sleep 0.2 s, --concurrency 2, --max-in-flight 10000), "
             f"{fmt(med('backlog', 'slow.secs'), 0)} s",
             fmt(slow_peak, 1), fmt(mib("slow.rss_last_kib"), 1),
             f"{fmt(med('backlog', 'slow.done'), 0)} done, "
             f"{fmt(med('backlog', 'slow.reconnects'), 0)} reconnects"],
            ["walq consume --drain --noop of the whole backlog", fmt(drain_peak, 1), "-",
             f"{cell('backlog', 'drain.rate')} jobs/s, server CPU "
             f"{cell('backlog', 'drain.server_cpu', 1)} ms/1k"]]
    table(["consumer", "peak RSS MiB", "RSS at end MiB", "notes"], rows)
    print()
    peak = max([x for x in (slow_peak, drain_peak) if x is not None], default=None)
    target_line("consumer peak RSS", fmt(peak, 1) + " MiB", "< 64 MiB", verdict(peak, "<=", 64))
    if R.get(("backlog", "slot_recreated")):
        print("  WARNING: walq recreated its slot and read the backlog from the table")
    print()
    storage_section(jobs)


def storage_section(jobs):
    """Part 6: walq.jobs and the outcome storage before the backlog is
    consumed, at their peak while it drains and the retention runs out, and
    after its generations are retired."""
    g = lambda k: med("backlog", k)
    ret = g("retention_secs")
    print(f"6. walq's storage over that run (publish {fmt(jobs, 0)} jobs, consume them all, "
          f"retention {fmt(ret, 0)} s, until the backlog's generations are retired)")
    print()
    mib = lambda x: None if x is None else x / 1048576
    whens = ("before", "peak", "after")

    def line(label, name, scale=None, digits=0):
        vals = [g(f"storage.{w}.{name}") for w in whens]
        if scale:
            vals = [scale(v) for v in vals]
        return [label] + [fmt(v, digits) for v in vals]

    def total(w, *names):
        vals = [g(f"storage.{w}.{n}") for n in names]
        return None if any(v is None for v in vals) else sum(vals)

    rows = [line("walq.jobs: rows", "jobs_rows"),
            line("walq.jobs: MiB", "jobs_bytes", mib, 1),
            line("walq.jobs: dead tuples", "jobs_dead"),
            ["outcome storage: rows (walq.outcomes + walq.outcome_batches)"]
            + [fmt(total(w, "outcomes_rows", "batches_rows"), 0) for w in whens],
            line("outcome storage: MiB", "outcome_bytes", mib, 1),
            line("  of which the backlog's generations", "backlog_outcome_bytes", mib, 1),
            line("outcome storage: dead tuples", "outcome_dead"),
            line("bookkeeping tables (schema walq): dead tuples", "book_dead")]
    table(["storage", "before", "peak during", "after"], rows)
    print()
    print("  before: after publishing; peak during: sampled every second from the slow handler's")
    print("  start until the backlog's generations were retired; after: then.  rows: exact counts")
    print("  before and after, pg_stat n_live_tup in the samples; MiB: pg_total_relation_size of")
    print("  every leaf partition (indexes and TOAST included); dead tuples: pg_stat n_dead_tup")
    print("  (TOAST included); bookkeeping: walq.readers, groups, generations, commands and the")
    print("  other tables of schema walq, which get UPDATEs and DELETEs.")
    series = text("backlog", "storage.series")
    if series:
        print(f"  time series ({fmt(g('storage.samples'), 0)} samples): {series}")
    print()
    parts = [fmt(g(f"storage.{w}.jobs_parts"), 0) for w in whens]
    print(f"  partitions of each table: {parts[0]} before, at most {parts[1]}, {parts[2]} after "
          "(a generation's are made")
    print("  ahead of its opening; the newer ones are empty)")
    gens = text("backlog", "backlog_generations")
    last = g("last_done.generation")
    print(f"  generations: {fmt(g('generations.made'), 0)} made (rows of walq.generations), "
          f"{fmt(g('generations.opened'), 0)} opened, "
          f"{fmt(g('generations.retired'), 0)} retired; the backlog was in g{gens or '?'}")
    ra, sa, fa = (g(f"last_done.{k}_after") for k in ("retired", "sealed", "finished"))
    if last is not None:
        rel = lambda x: "-" if x is None else (f"{fmt(-x, 1)} s before it" if x < 0
                                               else f"{fmt(x, 1)} s after it")
        print(f"  the last job done (g{fmt(last, 0)}) to its generation's retirement: {fmt(ra, 1)} s "
              f"(retention {fmt(ret, 0)} s);")
        print(f"  g{fmt(last, 0)} was sealed {rel(sa)}, seen finished by walq.maintain() {rel(fa)}, "
              f"retired {fmt(None if ra is None or sa is None else ra - sa, 1)} s after its seal")
    wait = g("retention.wait_secs")
    if g("retention.retired") == 0:
        print(f"  WARNING: the backlog's generations were not all retired {fmt(wait, 0)} s after the drain")
    print(f"  job records (walq.outcomes rows + ids in walq.outcome_batches): "
          f"{fmt(g('records.drained'), 0)} once drained, "
          f"{fmt(total('after', 'outcomes_rows', 'batch_ids'), 0)} after")
    book = sorted(((n.split(".", 2)[2], med("backlog", n)) for s_, n in R
                   if s_ == "backlog" and n.startswith("book.after.")),
                  key=lambda x: -(x[1] or 0))
    book = [f"walq.{n} {fmt(v, 0)}" for n, v in book if v]
    if book:
        print(f"  bookkeeping dead tuples after: {', '.join(book)}")
    print()
    left = g("storage.after.jobs_rows")
    target_line("walq.jobs rows after the retention", fmt(left, 0), "0", verdict(left, "<=", 0))
    dead = [g(f"storage.{w}.{n}") for w in ("peak", "after") for n in ("jobs_dead", "outcome_dead")]
    worst = None if any(d is None for d in dead) else max(dead)
    dp = None if dead[0] is None or dead[1] is None else dead[0] + dead[1]
    da = None if dead[2] is None or dead[3] is None else dead[2] + dead[3]
    target_line("dead tuples in the job and outcome tables", f"{fmt(dp, 0)} peak, {fmt(da, 0)} after",
                "0", verdict(worst, "<=", 0))
    peak = g("storage.peak.backlog_outcome_bytes")
    if peak is None:
        peak = g("storage.peak.outcome_bytes")
    per = None if peak is None or not jobs else peak / jobs * 1e6 / 1048576
    after_records = total("after", "outcomes_rows", "batch_ids")
    bounded = None if per is None or after_records is None else after_records
    target_line("outcome storage per million jobs at its peak",
                f"{fmt(per, 1)} MiB, {fmt(mib(g('storage.after.outcome_bytes')), 1)} after",
                "bounded", verdict(bounded, "<=", 0))
    print("    (the outcome partitions of the backlog's generations; bounded: every record of the")
    print("    backlog gone after the retention)")
    jb = g("storage.before.jobs_bytes")
    if jb is not None and jobs:
        print(f"  walq.jobs per million jobs, kept until their generation is retired: "
              f"{fmt(jb / jobs * 1e6 / 1048576, 1)} MiB")
    print()


def main():
    args = sys.argv[1:]
    machine = None
    if args and args[0] == "--best-skip":
        load(args[1])
        cfgs = [best_skip(v) for v, _ in BASELINES]
        cfgs = [" ".join(c.split("_")[1:]) for c in cfgs if c]
        print(",".join(cfgs) if cfgs else "delete 2,update 4")
        return
    if args and args[0] == "--machine":
        machine = args[1]
        args = args[2:]
    load(args[0])
    m = {}
    if machine:
        with open(machine) as f:
            for line in f:
                k, _, v = line.rstrip("\n").partition("\t")
                m[k] = v
    print("=" * 100)
    print(f"walq benchmarks, {m.get('date', '?')}  (bash bench/run.sh"
          f"{' --quick' if m.get('quick') == '1' else ''})")
    print(f"machine: {m.get('cpus', '?')} CPUs ({m.get('cpu_model', '?')}), {m.get('memory', '?')}, "
          f"kernel {m.get('kernel', '?')}, load average at start {m.get('loadavg', '?')}")
    print(f"{m.get('postgres', '?')}, wal2json {m.get('wal2json', '?')}, PgQ {m.get('pgq', '?')}, "
          f"walq {m.get('walq', '?')}")
    durable = m.get("durable", "1") == "1"
    print(f"servers: {'fsync, synchronous_commit and full_page_writes on' if durable else 'fsync, synchronous_commit, full_page_writes off (BENCH_DURABLE=0)'}; "
          "a CHECKPOINT before each measured run")
    print(f"each figure: median [min .. max] of {m.get('rounds', '?')} rounds; each ratio: of the "
          "medians [range of per-round ratios]")
    print("=" * 100)
    print()
    section_drain()
    section_e2e()
    section_cpu()
    section_latency()
    section_backlog()
    if "elapsed" in m:
        print(f"(run time {m['elapsed']})")


main()

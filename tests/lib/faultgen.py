#!/usr/bin/env python3
"""faultgen: the generator and the driver of the randomized fault test.

    faultgen.py plan --seed N --seconds T [--exclude A,B] --out PLAN.json
    faultgen.py run --plan PLAN.json --work DIR --walq BIN --handler PATH

`plan` draws everything random from the seed alone (random.Random(seed)):
the producers' operations (kind, jobs, payloads, run_at, ids, dedup keys,
commit or rollback, when and on which lane), each job's handler behaviour
per attempt (encoded in its payload), the consumers (the exec group split
over one or two readers) and the faults (kind, target, moment, duration).
It writes the plan and prints its digest: the same seed, seconds and
exclusions give the same digest, byte for byte.

`run` plays a plan against the server that tests/integration/fault_random.sh
started (libpq environment): supervised consumers, producer lanes, the
faults, a sampler of walq.job_status; then it waits for the groups to
drain, stops the consumers and checks the invariants.  It exits 0 when
every check holds, 1 with the details of each violation otherwise.  Only
the standard library is used; SQL goes through psql.

Timing is not replayed: a seed fixes what happens and the moments it is
meant to happen at, not how the server, walq and the scheduler interleave.
See docs/testing.md.
"""

import argparse
import base64
import collections
import datetime
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

PLAN_VERSION = 2

# Queues and groups.  The exec group reads both queues, the sql group only
# QA: jobs of QB have one group, jobs of QA two.
QA, QB = "fa", "fb"
GX, GS = "gx", "gs"
GROUP_QUEUES = {GX: (QA, QB), GS: (QA,)}
SQL_STATEMENT = "INSERT INTO effects (job_id) VALUES ($2)"

# Handler behaviours, one letter per attempt (the handler reads the letter
# of its WALQ_ATTEMPT from the payload):
#   S succeed (exit 0)      F fail (exit 1)         R ask for a retry (75)
#   H hang past --timeout   C crash (kill -9 self)  G garbage + exit 1
#   W garbage + exit 0 (garbage: random bytes, invalid UTF-8, NUL, on
#     stderr and stdout)
SUCCESS = "SW"
LETTER_WEIGHTS = {"S": 30, "F": 14, "R": 14, "H": 1.5, "C": 10, "G": 14, "W": 14}

# run_at classes.  'soon' is beyond --timer-horizon 2; 'near' within it.
FAR = "9999-12-31 23:59:59+00"
PAST_LITERAL = "2000-01-01 00:00:00+00"

TIMEOUT = 5          # --timeout of the exec handlers; H sleeps longer
SAMPLE_FULL_ROWS = 30000   # above this many done jobs the sampler mostly looks at new ones
SAMPLE_FULL_EVERY = 25
REPORT_MAX = 15      # violations listed per invariant in the report
STALL = 60           # the drain gives up after this long without progress
RERUN_SLACK = 3.0    # seconds before a disruption that still explain a re-run

# Everything that --exclude can leave out (a producer kind, a behaviour
# letter, a run_at class, a fault kind, or one of the features below).
FEATURES = {
    "producers": ["publish", "insert", "multi", "copy", "walqpub", "early", "explicit",
                  "large"],
    "ends": ["rollback", "abort", "savepoint"],
    "letters": list("FRHCGW"),
    "runat": ["past", "now", "near", "soon", "far"],
    "faults": ["kill9", "killdrop", "restart", "crash", "slotdrop", "walsender", "readonly",
               "connkill", "rotate"],
    "other": ["dedup", "sqlfail", "pad", "lowids", "partition"],
}


# ---------------------------------------------------------------- the plan --

def weighted(r, weights, exclude=()):
    items = [(k, w) for k, w in weights.items() if k not in exclude and w > 0]
    total = sum(w for _, w in items)
    x = r.uniform(0, total)
    for k, w in items:
        x -= w
        if x <= 0:
            return k
    return items[-1][0]


class Planner:
    def __init__(self, seed, seconds, exclude):
        self.r = random.Random(seed)
        self.seed = seed
        self.seconds = seconds
        self.ex = set(exclude)
        self.nkey = 0
        self.nop = 0
        self.low_ids = set()
        self.high_ids = set()

    def on(self, feature):
        return feature not in self.ex

    # -- jobs --
    def behaviour(self, m, plain_p):
        r = self.r
        if r.random() < plain_p:
            return "S" * m
        return "".join(weighted(r, LETTER_WEIGHTS, self.ex) for _ in range(m))

    def garbage(self):
        """Bytes a careless handler writes: base64 in the payload."""
        r = self.r
        parts = []
        n = r.choice([1, 2, 4, 8, 20])
        for _ in range(n):
            kind = r.randrange(8)
            if kind == 0:
                parts.append(bytes(r.randrange(256) for _ in range(r.randint(1, 64))))
            elif kind == 1:
                parts.append(b"caf\xe9 cr\xe8me ")              # Latin-1
            elif kind == 2:
                parts.append("é€😀".encode() * r.randint(1, 200))  # multibyte, cut anywhere
            elif kind == 3:
                parts.append(b"\xe2\x82")                       # a truncated sequence
            elif kind == 4:
                parts.append(b"\x00nul\x00")
            elif kind == 5:
                parts.append(b"\x1b[31mred\x1b[0m\r\n\t")
            elif kind == 6:
                parts.append(b"\n" * r.randint(1, 5))
            else:
                parts.append(b"\xff\xfe\xc0\xaf\xed\xa0\x80")   # never valid UTF-8
        return base64.b64encode(b"".join(parts)[:3000]).decode()

    def job(self, queue, kind, big=False, runat_classes=None, allow_dedup=True):
        r = self.r
        self.nkey += 1
        m = r.randint(1, 4)
        j = {"k": "j%d" % self.nkey, "q": queue, "m": m,
             "b": self.behaviour(m, 0.97 if big else 0.72),
             "pr": r.choice([0, 0, 0, 0, -1, 1, 5])}
        if any(c in "GW" for c in j["b"]):
            j["g"] = self.garbage()
        if queue == QA and self.on("sqlfail") and r.random() < (0.002 if big else 0.03):
            j["sf"] = 1
        if self.on("pad") and r.random() < (0.01 if big else 0.08):
            j["pad"] = r.choice([10, 300, 3000, 30000])
        classes = runat_classes or {"default": 60, "past": 8, "now": 8, "near": 7, "soon": 7,
                                    "far": 0.4}
        ra = weighted(r, {c: (w if c == "default" or self.on(c) else 0)
                          for c, w in classes.items()})
        if big and ra == "far":
            ra = "default"
        j["ra"] = ra
        if ra == "soon":
            j["rv"] = round(r.uniform(3, 8), 2)
        elif ra == "near":
            j["rv"] = round(r.uniform(0.3, 1.5), 2)
        elif ra == "past":
            j["rv"] = r.choice([1, 60, 86400 * 365])
        if (allow_dedup and self.on("dedup") and not big and ra != "far"
                and r.random() < 0.06):
            j["dk"] = "dk%d" % r.randrange(10)
        return j

    def low_id(self):
        while True:
            i = self.r.randrange(1, 999_999)
            if i not in self.low_ids:
                self.low_ids.add(i)
                return i

    def high_id(self):
        while True:
            i = 10**12 + self.r.randrange(10**9)
            if i not in self.high_ids:
                self.high_ids.add(i)
                return i

    def size(self, lo, hi, mean):
        return max(lo, min(hi, lo + int(self.r.expovariate(1 / mean))))

    # -- operations --
    def end(self, n):
        r = self.r
        x = r.random()
        if x < 0.06 and self.on("rollback"):
            return "rollback"
        if x < 0.10 and self.on("abort"):
            return "abort"
        if x < 0.16 and n >= 3 and self.on("savepoint"):
            return "savepoint"
        return "commit"

    def op(self, kind, at, lane, big=False):
        r = self.r
        self.nop += 1
        op = {"op": self.nop, "kind": kind, "at": round(at, 3), "lane": lane}
        queue = QA if r.random() < 0.7 else QB
        if kind == "publish":
            op["jobs"] = [self.job(r.choice([QA, QB]), kind) for _ in range(r.randint(1, 12))]
        elif kind == "insert":
            op["jobs"] = [self.job(r.choice([QA, QB]), kind) for _ in range(r.randint(1, 8))]
        elif kind in ("multi", "explicit"):
            n = r.randint(2000, 4000) if big else self.size(2, 150, 20)
            op["jobs"] = [self.job(r.choice([QA, QB]), kind, big) for _ in range(n)]
            if kind == "explicit":
                for j in op["jobs"]:
                    j["id"] = self.low_id() if (self.on("lowids") and r.random() < 0.7) \
                        else self.high_id()
        elif kind == "copy":
            n = r.randint(2000, 4000) if big else self.size(5, 300, 30)
            classes = {"default": 70, "past": 10, "now": 10, "far": 0.3}
            op["jobs"] = [self.job(r.choice([QA, QB]), kind, big, classes) for _ in range(n)]
        elif kind == "walqpub":
            n = self.size(3, 250, 30)
            ra = weighted(r, {"default": 70, "past": 10 if self.on("past") else 0,
                              "soon": 10 if self.on("soon") else 0,
                              "far": 1 if self.on("far") else 0})
            op["m"] = r.randint(1, 4)
            op["ra"] = ra
            op["rv"] = round(r.uniform(3, 8), 2) if ra == "soon" else None
            op["pr"] = r.choice([0, 0, 3])
            op["batch"] = r.choice([1, 9, 50, 1000])
            op["dk"] = ("dkp%d" % r.randrange(3)) if (self.on("dedup") and ra != "far"
                                                       and r.random() < 0.08) else None
            op["q"] = queue
            jobs = []
            for _ in range(n):
                j = self.job(queue, kind, allow_dedup=False,
                             runat_classes={"default": 1})
                j["m"] = op["m"]
                j["b"] = j["b"][:op["m"]].ljust(op["m"], "S")
                if "g" in j and not any(c in "GW" for c in j["b"]):
                    del j["g"]
                if "g" not in j and any(c in "GW" for c in j["b"]):
                    j["g"] = self.garbage()
                j["pr"] = op["pr"]
                j["ra"] = ra
                if op["rv"] is not None:
                    j["rv"] = op["rv"]
                elif "rv" in j:
                    del j["rv"]
                if ra == "past":
                    j["rv"] = "literal"
                if op["dk"]:
                    j["dk"] = op["dk"]
                jobs.append(j)
            op["jobs"] = jobs
            op["end"] = "commit"
            return op
        elif kind == "early":
            # Two operations: the draw now, the insert later (maybe on another lane).
            n = r.randint(1, 20)
            op["kind"] = "draw"
            op["n"] = n
            op["end"] = "commit"
            self.nop += 1
            later = {"op": self.nop, "kind": "early", "draw": op["op"],
                     "at": round(at + r.uniform(0.5, 20), 3), "lane": r.randrange(4),
                     "jobs": [self.job(r.choice([QA, QB]), "early") for _ in range(n)]}
            later["end"] = self.end(n)
            if later["end"] == "savepoint":
                a = r.randint(1, n - 2)
                later["sp"] = [a, r.randint(a + 1, n - 1)]
            return [op, later]
        else:
            raise ValueError(kind)
        op["end"] = self.end(len(op["jobs"]))
        if big and op["end"] == "abort":
            op["end"] = "rollback"
        if op["end"] == "savepoint":
            n = len(op["jobs"])
            a = r.randint(1, n - 2)
            b = r.randint(a + 1, n - 1)
            op["sp"] = [a, b]   # jobs[a:b] are rolled back to the savepoint
        return op

    def plan(self):
        r = self.r
        T = self.seconds
        partitions = 2 if (self.on("partition") and r.random() < 0.65) else 1
        consumers = []
        if partitions == 1:
            consumers.append({"name": "gx", "group": GX, "partition": None,
                              "slot": "walq_gx"})
        else:
            for k in range(partitions):
                consumers.append({"name": "gx%d" % k, "group": GX,
                                  "partition": "%d/%d" % (k, partitions),
                                  "slot": "walq_gx_%dof%d" % (k, partitions)})
        consumers.append({"name": "gs", "group": GS, "partition": None, "slot": "walq_gs"})

        ops = []
        kinds = {"publish": 18, "insert": 14, "multi": 14, "copy": 10, "walqpub": 9,
                 "early": 9, "explicit": 8}
        kinds = {k: w for k, w in kinds.items() if self.on(k)}
        lanes = 4
        for lane in range(lanes):
            t = r.uniform(0, 1.5)
            while t < T - 3:
                o = self.op(weighted(r, kinds), t, lane)
                ops.extend(o if isinstance(o, list) else [o])
                t += r.expovariate(1 / 1.6)
        if self.on("large"):
            for _ in range(max(1, int(T // 45))):
                o = self.op(r.choice(["multi", "copy"]), r.uniform(3, max(4, T - 15)),
                            r.randrange(lanes), big=True)
                ops.append(o)
        for o in ops:
            if o["kind"] == "early":
                o["at"] = min(o["at"], T - 1)
        ops.sort(key=lambda o: (o["at"], o["op"]))

        faults = []
        fweights = {"kill9": 24, "killdrop": 6, "restart": 8, "crash": 8, "slotdrop": 10,
                    "walsender": 14, "readonly": 10, "connkill": 14, "rotate": 12}
        fweights = {k: w for k, w in fweights.items() if self.on(k)}
        t = r.uniform(3, 6)
        while fweights and t < T - 2:
            kind = weighted(r, fweights)
            f = {"at": round(t, 3), "kind": kind}
            if kind in ("kill9", "killdrop", "slotdrop", "walsender", "connkill"):
                f["target"] = r.choice(consumers)["name"]
            if kind in ("kill9", "killdrop"):
                f["delay"] = round(r.uniform(0.1, 2.0), 2)
            if kind == "readonly":
                f["duration"] = round(r.uniform(1.5, 6), 2)
                t += f["duration"]
            if kind in ("restart", "crash"):
                t += 2
            faults.append(f)
            t += r.uniform(1.5, 6.5)

        return {"version": PLAN_VERSION, "seed": self.seed, "seconds": T,
                "exclude": sorted(self.ex), "partitions": partitions,
                "consumers": consumers, "lanes": lanes, "ops": ops, "faults": faults}


def plan_digest(plan):
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]


def plan_summary(plan):
    kinds = collections.Counter()
    jobs = collections.Counter()
    ends = collections.Counter()
    letters = collections.Counter()
    runat = collections.Counter()
    for o in plan["ops"]:
        kinds[o["kind"]] += 1
        ends[o.get("end", "commit")] += 1
        for j in o.get("jobs", []):
            jobs[o["kind"]] += 1
            letters.update(j["b"])
            runat[j["ra"]] += 1
    faults = collections.Counter(f["kind"] for f in plan["faults"])
    fmt = lambda c: " ".join("%s=%d" % kv for kv in sorted(c.items()))
    return "\n".join([
        "plan: %d s, %d consumers (exec group over %d reader%s), %d operations, %d jobs" % (
            plan["seconds"], len(plan["consumers"]), plan["partitions"],
            "s" if plan["partitions"] > 1 else "", len(plan["ops"]), sum(jobs.values())),
        "  operations: " + fmt(kinds),
        "  jobs by producer: " + fmt(jobs),
        "  ends: " + fmt(ends),
        "  run_at: " + fmt(runat),
        "  behaviour letters: " + fmt(letters),
        "  faults (%d): " % len(plan["faults"]) + fmt(faults),
        "  exclude: " + (",".join(plan["exclude"]) or "-"),
    ])


# --------------------------------------------------------------- predictions --

def predict(job):
    """{group: (status, attempts)} the plan says each group must end with."""
    out = {}
    if job["ra"] == "far":
        for g, qs in GROUP_QUEUES.items():
            if job["q"] in qs:
                out[g] = ("scheduled", 0)
        return out
    b = job["b"]
    for i, c in enumerate(b[:job["m"]]):
        if c in SUCCESS:
            out[GX] = ("done", i + 1)
            break
    else:
        out[GX] = ("dead", job["m"])
    if job["q"] in GROUP_QUEUES[GS]:
        out[GS] = ("dead", job["m"]) if job.get("sf") else ("done", 1)
    return out


def payload(job):
    p = {"wk": job["k"], "wb": job["b"]}
    if "g" in job:
        p["wg"] = job["g"]
    if job.get("sf"):
        p["sf"] = 1
    if "pad" in job:
        p["pad"] = "x" * job["pad"]
    return json.dumps(p, separators=(", ", ": "))


# ------------------------------------------------------------------ running --

def now():
    return time.time()


def lit(s):
    return "'" + str(s).replace("'", "''") + "'"


class Psql:
    def __init__(self):
        self.bin = os.path.join(os.environ.get("PGTEST_BINDIR", "/usr/lib/postgresql/15/bin"),
                                "psql")

    def run(self, sql=None, file=None, stdin=None, timeout=90, app="faultgen",
            override_ro=False):
        args = [self.bin, "-X", "-At", "-q", "-v", "ON_ERROR_STOP=1", "-F", "\t"]
        if sql is not None:
            args += ["-c", sql]
        if file is not None:
            args += ["-f", file]
        env = dict(os.environ, PGAPPNAME=app, PGCONNECT_TIMEOUT="5")
        if override_ro:
            env["PGOPTIONS"] = "-c default_transaction_read_only=off"
        try:
            p = subprocess.run(args, input=stdin, capture_output=True, timeout=timeout, env=env)
            return p.returncode, p.stdout.decode("utf-8", "replace"), \
                p.stderr.decode("utf-8", "replace")
        except subprocess.TimeoutExpired:
            return 124, "", "psql timed out after %d s" % timeout

    def rows(self, sql, **kw):
        rc, out, err = self.run(sql, **kw)
        if rc != 0:
            raise RuntimeError("query failed (%d): %s\n%s" % (rc, err.strip(), sql[:300]))
        return [line.split("\t") for line in out.split("\n") if line != ""]


def connect_failure(err):
    """psql or walq could not connect at all: nothing was sent, a retry is safe."""
    return ("could not connect" in err or "Is the server running" in err
            or "the database system is starting up" in err
            or "the database system is shutting down" in err
            or "the database system is in recovery mode" in err
            or "No such file or directory" in err and "socket" in err)


class Runner:
    def __init__(self, plan, work, walq, handler, drain_timeout):
        self.plan = plan
        self.work = work
        self.walq = walq
        self.handler = handler
        self.drain_timeout = drain_timeout
        self.sql = Psql()
        self.lock = threading.Lock()
        self.findings = []        # (invariant, text)
        self.summaries = []
        self.events = []          # disruptions: (start, end, consumer or None, what)
        self.t0 = None
        self.stop_faults = threading.Event()
        self.stopping = threading.Event()
        self.op_state = {}        # op number -> 'committed' | 'uncertain' | 'rolledback' | 'skipped'
        self.op_ids = {}          # op number -> ids printed by psql (RETURNING, draws)
        self.op_err = {}
        self.draw_done = {}       # draw op number -> threading.Event
        self.consumers = {c["name"]: dict(c, proc=None, hold_until=0.0, held=False,
                                           expect_exit=False, starts=0, exits=[])
                          for c in plan["consumers"]}
        self.log_path = os.path.join(work, "handler.log")
        open(self.log_path, "a").close()
        self.sampler_ran = set()
        self.sampler_offset = 0
        self.sampler_rest = b""
        self.sampler_bad = {}     # job id -> first time seen done without a run
        self.sampler_samples = 0
        self.sampler_rows = 0
        self.sampler_errors = 0
        self.gs_bad = {}
        self.retries = 0

    # -- reporting --
    def t(self, ts=None):
        return (ts if ts is not None else now()) - (self.t0 or now())

    def say(self, msg):
        print("[%7.2f] %s" % (self.t(), msg), flush=True)

    def finding(self, invariant, text):
        with self.lock:
            self.findings.append((invariant, text))
            n = sum(1 for inv, _ in self.findings if inv == invariant)
        if n <= 5:
            self.say("VIOLATION [%s]: %s" % (invariant, text.splitlines()[0] if text else ""))

    # -- consumers --
    def consumer_args(self, c):
        a = [self.walq, "consume", "--group", c["group"]]
        for q in GROUP_QUEUES[c["group"]]:
            a += ["--queue", q]
        if c["partition"]:
            a += ["--partition", c["partition"]]
        a += ["--backoff-min", "0.01", "--backoff-max", "0.2", "--timer-horizon", "2"]
        if c["group"] == GS:
            a += ["--sql", SQL_STATEMENT]
        else:
            # --verbose: each failed attempt is logged with its error, so
            # that the check can tell a handler the machine made too slow
            # from walq's doing.
            a += ["--verbose", "--concurrency", "3", "--timeout", str(TIMEOUT), "--",
                  self.handler]
        return a

    def timeouts(self):
        """(job id, attempt) of the exec group's attempts that timed out, from the logs."""
        out = set()
        pat = re.compile(r"job (\d+) (?:attempt (\d+) failed, retrying|is dead after (\d+) "
                         r"attempts?): handler timed out")
        for name in os.listdir(self.work):
            if not (name.startswith("consumer-gx") and name.endswith(".log")):
                continue
            with open(os.path.join(self.work, name), "rb") as fh:
                for raw in fh:
                    m = pat.search(raw.decode("utf-8", "replace"))
                    if m:
                        out.add((int(m.group(1)), int(m.group(2) or m.group(3))))
        return out

    def consumer_log(self, c):
        return os.path.join(self.work, "consumer-%s.log" % c["name"])

    def start_consumer(self, c):
        log = open(self.consumer_log(c), "ab")
        log.write(("--- faultgen: start %d at %.2f s ---\n" % (c["starts"] + 1, self.t())).encode())
        log.flush()
        out = open(os.path.join(self.work, "consumer-%s.out" % c["name"]), "ab")
        c["proc"] = subprocess.Popen(self.consumer_args(c), stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=log)
        log.close()
        out.close()
        c["starts"] += 1
        c["started_at"] = now()

    def tail(self, c, n=15):
        try:
            with open(self.consumer_log(c), "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return ""
        return "\n".join("    " + line for line in lines[-n:])

    def exit_reason(self, c):
        """The consumer's last ERROR line since its last start, numbers blurred."""
        try:
            with open(self.consumer_log(c), "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return "?"
        seg = text.rsplit("--- faultgen: start", 1)[-1]
        errs = [line for line in seg.splitlines() if "ERROR:" in line or "FATAL:" in line]
        if not errs:
            return "no ERROR line"
        line = errs[-1].split("ERROR:", 1)[-1].split("FATAL:", 1)[-1].strip()
        line = re.sub(r"/tmp/[^ \"]+", "DIR", line)
        line = re.sub(r"0x[0-9a-f]{2}( 0x[0-9a-f]{2})*", "0x..", line)
        return re.sub(r"\d+", "N", line)[:160]

    def supervise(self):
        while not self.stopping.is_set():
            for c in self.consumers.values():
                p = c["proc"]
                if p is not None and p.poll() is not None:
                    rc = p.returncode
                    c["proc"] = None
                    ts = now()
                    if c["expect_exit"] and rc == -signal.SIGKILL:
                        c["expect_exit"] = False
                    else:
                        reason = self.exit_reason(c)
                        c["exits"].append((ts, rc, reason))
                        same = sum(1 for e in c["exits"] if e[2] == reason)
                        if same == 1:
                            self.finding("consumer-exit",
                                         "consumer %s (pid %d) exited on its own with status %s "
                                         "at %.2f s (%s); its last log lines:\n%s"
                                         % (c["name"], p.pid, rc, self.t(ts), reason,
                                            self.tail(c)))
                        elif same in (2, 10, 100):
                            self.say("consumer %s exited again (%d times): %s"
                                     % (c["name"], same, reason))
                        with self.lock:
                            self.events.append((ts, ts + 1.0, c["name"], "exit %s" % rc))
                        c["hold_until"] = max(c["hold_until"], ts + 1.0)
                if c["proc"] is None and not c["held"] and now() >= c["hold_until"]:
                    if c["starts"] > 0:
                        with self.lock:
                            self.events.append((now(), now(), c["name"], "restart"))
                    self.start_consumer(c)
            time.sleep(0.05)

    def kill9(self, name, delay, hold=False):
        c = self.consumers[name]
        c["hold_until"] = now() + delay
        c["held"] = hold
        p = c["proc"]
        if p is None or p.poll() is not None:
            return False
        c["expect_exit"] = True
        p.kill()
        return True

    # -- producers --
    def runat_sql(self, j):
        ra = j["ra"]
        if ra == "default":
            return "DEFAULT"
        if ra == "past":
            return lit(PAST_LITERAL) if j.get("rv") == "literal" or j["rv"] > 86400 \
                else "now() - interval %s" % lit("%s seconds" % j["rv"])
        if ra == "now":
            return "now()"
        if ra in ("near", "soon"):
            return "now() + interval %s" % lit("%s seconds" % j["rv"])
        if ra == "far":
            return lit(FAR)
        raise ValueError(ra)

    def row_sql(self, j, with_id):
        dk = lit(j["dk"]) if j.get("dk") else "NULL"
        cols = [lit(j["q"]), lit(payload(j)) + "::jsonb", str(j["pr"]), self.runat_sql(j),
                str(j["m"]), dk]
        if with_id:
            cols.insert(0, str(j["id"]) if j.get("id") is not None else "DEFAULT")
        return "(" + ", ".join(cols) + ")"

    def insert_sql(self, jobs, with_id):
        cols = "(queue, payload, priority, run_at, max_attempts, dedup_key)"
        if with_id:
            cols = "(id, queue, payload, priority, run_at, max_attempts, dedup_key)"
        return ("INSERT INTO walq.jobs %s VALUES\n" % cols
                + ",\n".join(self.row_sql(j, with_id) for j in jobs) + "\nRETURNING id;\n")

    def publish_sql(self, j):
        ra = "now()" if j["ra"] == "default" else self.runat_sql(j)
        return ("SELECT walq.publish(%s, %s::jsonb, run_at => %s, priority => %d, "
                "max_attempts => %d, dedup_key => %s);\n"
                % (lit(j["q"]), lit(payload(j)), ra, j["pr"], j["m"],
                   lit(j["dk"]) if j.get("dk") else "NULL"))

    def copy_sql(self, jobs):
        out = ["COPY walq.jobs (queue, payload, priority, run_at, max_attempts, dedup_key)"
               " FROM STDIN;\n"]
        for j in jobs:
            ra = {"default": "now", "now": "now", "past": PAST_LITERAL, "far": FAR}[j["ra"]]
            p = payload(j)
            assert "\\" not in p and "\t" not in p and "\n" not in p
            out.append("\t".join([j["q"], p, str(j["pr"]), ra, str(j["m"]),
                                  j["dk"] if j.get("dk") else "\\N"]) + "\n")
        out.append("\\.\n")
        return "".join(out)

    def part_sql(self, kind, jobs):
        if not jobs:
            return ""
        if kind == "publish":
            return "".join(self.publish_sql(j) for j in jobs)
        if kind == "insert":
            return "".join(self.insert_sql([j], False) for j in jobs)
        if kind == "multi":
            return self.insert_sql(jobs, False)
        if kind in ("explicit", "early"):
            return self.insert_sql(jobs, True)
        if kind == "copy":
            return self.copy_sql(jobs)
        raise ValueError(kind)

    def op_script(self, op):
        kind = op["kind"]
        if kind == "draw":
            return ("SELECT nextval(pg_get_serial_sequence('walq.jobs', 'id')) "
                    "FROM generate_series(1, %d);\n" % op["n"])
        jobs = op["jobs"]
        end = op["end"]
        s = ["BEGIN;\n"]
        if end == "savepoint":
            a, b = op["sp"]
            s.append(self.part_sql(kind, jobs[:a]))
            s.append("SAVEPOINT faultgen;\n")
            s.append(self.part_sql(kind, jobs[a:b]))
            s.append("ROLLBACK TO SAVEPOINT faultgen;\n")
            s.append(self.part_sql(kind, jobs[b:]))
            s.append("COMMIT;\n")
        else:
            s.append(self.part_sql(kind, jobs))
            if end == "commit":
                s.append("COMMIT;\n")
            elif end == "rollback":
                s.append("ROLLBACK;\n")
            elif end == "abort":
                s.append("SELECT 1 / 0;\n")   # ON_ERROR_STOP: psql exits, nothing commits
        return "".join(s)

    def run_walqpub(self, op):
        args = [self.walq, "publish", "--batch-size", str(op["batch"]),
                "--max-attempts", str(op["m"]), "--priority", str(op["pr"])]
        if op["ra"] == "past":
            args += ["--run-at", PAST_LITERAL]
        elif op["ra"] == "far":
            args += ["--run-at", FAR]
        elif op["ra"] == "soon":
            ts = datetime.datetime.now(datetime.timezone.utc) + \
                datetime.timedelta(seconds=op["rv"])
            args += ["--run-at", ts.isoformat()]
        if op["dk"]:
            args += ["--dedup-key", op["dk"]]
        args.append(op["q"])
        data = "".join(payload(j) + "\n" for j in op["jobs"]).encode()
        env = dict(os.environ, PGAPPNAME="faultgen producer", PGCONNECT_TIMEOUT="5")
        try:
            p = subprocess.run(args, input=data, capture_output=True, timeout=90, env=env)
            return p.returncode, p.stdout.decode("utf-8", "replace"), \
                p.stderr.decode("utf-8", "replace")
        except subprocess.TimeoutExpired:
            return 124, "", "walq publish timed out"

    def execute(self, op):
        kind = op["kind"]
        if kind == "early":
            ev = self.draw_done[op["draw"]]
            ev.wait(120)
            ids = self.op_ids.get(op["draw"])
            if self.op_state.get(op["draw"]) != "committed" or not ids \
                    or len(ids) != len(op["jobs"]):
                self.op_state[op["op"]] = "skipped"
                return
            for j, i in zip(op["jobs"], ids):
                j["id"] = int(i)
        deadline = now() + 20
        while True:
            if kind == "walqpub":
                rc, out, err = self.run_walqpub(op)
                retry_ok = connect_failure(err) and "published" not in err
            else:
                path = os.path.join(self.work, "ops", "op%05d.sql" % op["op"])
                with open(path, "w") as f:
                    f.write(self.op_script(op))
                rc, out, err = self.sql.run(file=path, app="faultgen producer")
                # An error before the COMMIT (the script's last statement) aborted
                # the transaction: nothing committed, so a retry is safe.
                retry_ok = connect_failure(err) or (
                    "read-only transaction" in err and op.get("end") != "abort")
            if rc == 0 or not retry_ok or now() > deadline or self.stopping.is_set():
                break
            self.retries += 1
            time.sleep(0.3)
        self.op_err[op["op"]] = err.strip()[-300:]
        ids = [x for x in out.split() if re.fullmatch(r"\d+", x)]
        self.op_ids[op["op"]] = ids
        end = op.get("end", "commit")
        if end in ("rollback", "abort"):
            self.op_state[op["op"]] = "rolledback"
        elif rc == 0:
            self.op_state[op["op"]] = "committed"
        else:
            self.op_state[op["op"]] = "uncertain"
        if kind == "draw":
            self.draw_done[op["op"]].set()

    def lane(self, n):
        for op in [o for o in self.plan["ops"] if o["lane"] == n]:
            delay = self.t0 + op["at"] - now()
            if delay > 0:
                time.sleep(delay)
            try:
                self.execute(op)
            except Exception as e:  # the test's own error: fail loudly
                self.finding("test-error", "producer op %d: %r" % (op["op"], e))
                self.op_state[op["op"]] = "uncertain"
                if op["kind"] == "draw":
                    self.draw_done[op["op"]].set()

    # -- faults --
    def ctl(self, fn):
        """pg_restart or pg_crash of tests/lib/pgtest.sh (exported by the test)."""
        p = subprocess.run(["bash", "-c", fn], capture_output=True, timeout=180)
        if p.returncode != 0:
            self.finding("test-error", "%s failed: %s" % (fn, p.stderr.decode(errors="replace")))

    def admin(self, sql, tries=50):
        for _ in range(tries):
            rc, out, err = self.sql.run(sql, app="faultgen fault", override_ro=True)
            if rc == 0:
                return out.strip()
            time.sleep(0.2)
        self.finding("test-error", "fault statement failed: %s: %s" % (sql[:80], err.strip()))
        return None

    def drop_slot_sql(self, slot):
        return """DO $$
DECLARE pid int;
BEGIN
  FOR i IN 1 .. 1000 LOOP
    SELECT active_pid INTO pid FROM pg_replication_slots WHERE slot_name = '%(s)s';
    IF NOT FOUND THEN RETURN; END IF;
    IF pid IS NOT NULL THEN PERFORM pg_terminate_backend(pid); END IF;
    BEGIN
      PERFORM pg_drop_replication_slot('%(s)s');
      RETURN;
    EXCEPTION WHEN object_in_use OR undefined_object THEN
      PERFORM pg_sleep(0.01);
    END;
  END LOOP;
  RAISE EXCEPTION 'could not drop slot %(s)s';
END $$""" % {"s": slot}

    def fault(self, f):
        kind = f["kind"]
        target = f.get("target")
        c = self.consumers.get(target) if target else None
        start = now()
        detail = ""
        if kind == "kill9":
            detail = "killed" if self.kill9(target, f["delay"]) else "was not running"
        elif kind == "killdrop":
            self.kill9(target, 0, hold=True)
            deadline = now() + 15
            while now() < deadline:
                r = self.admin("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s'"
                               " AND active" % c["slot"])
                if r == "0":
                    break
                time.sleep(0.1)
            self.admin(self.drop_slot_sql(c["slot"]))
            time.sleep(f["delay"])
            c["held"] = False
            detail = "slot %s dropped while the consumer was down" % c["slot"]
        elif kind == "restart":
            self.ctl("pg_restart")
        elif kind == "crash":
            self.ctl("pg_crash")
        elif kind == "slotdrop":
            self.admin(self.drop_slot_sql(c["slot"]))
            detail = "slot " + c["slot"]
        elif kind == "walsender":
            r = self.admin("SELECT count(pg_terminate_backend(active_pid)) FROM "
                           "pg_replication_slots WHERE slot_name = '%s' AND active_pid IS NOT "
                           "NULL" % c["slot"])
            detail = "%s walsender(s)" % r
        elif kind == "connkill":
            r = self.admin("SELECT string_agg(application_name || ':' || "
                           "pg_terminate_backend(pid)::text, ',') FROM pg_stat_activity "
                           "WHERE pid = walq.reader_lock_pid('%s')" % c["slot"])
            detail = "backend %s" % (r or "none")
        elif kind == "rotate":
            # A new generation now (sql/007): jobs spread over generations and
            # their seals go through the streams; nothing is retired, as the
            # retention (24 h) is far.
            self.admin("UPDATE walq.generations SET opened_at = now() - interval '2 hours'"
                       " WHERE generation = pg_sequence_last_value('walq.generation_seq')")
            self.admin("SELECT walq.maintain()")
            self.admin("SELECT walq.maintain()")
            detail = "generation %s" % self.admin(
                "SELECT pg_sequence_last_value('walq.generation_seq')")
        elif kind == "readonly":
            self.admin("ALTER SYSTEM SET default_transaction_read_only = on")
            self.admin("SELECT pg_reload_conf()")
            self.stop_faults.wait(f["duration"])
            self.admin("ALTER SYSTEM RESET default_transaction_read_only", tries=600)
            self.admin("SELECT pg_reload_conf()", tries=600)
            detail = "%.1f s" % f["duration"]
        end = now()
        scope = None if kind in ("restart", "crash", "readonly", "rotate") else target
        # A rotation must not make any handler run again: it explains no re-run.
        if kind != "rotate":
            with self.lock:
                self.events.append((start, end, scope, kind))
        self.say("fault %s%s%s (%.2f s)" % (kind, " " + target if target else "",
                                            ": " + detail if detail else "", end - start))

    def faults(self):
        for f in self.plan["faults"]:
            delay = self.t0 + f["at"] - now()
            if delay > 0 and self.stop_faults.wait(delay):
                return
            try:
                self.fault(f)
            except Exception as e:
                self.finding("test-error", "fault %r: %r" % (f, e))

    # -- the sampler --
    def read_log(self):
        with open(self.log_path, "rb") as fh:
            fh.seek(self.sampler_offset)
            data = fh.read()
        self.sampler_offset += len(data)
        data = self.sampler_rest + data
        lines = data.split(b"\n")
        self.sampler_rest = lines.pop()
        for line in lines:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == GX.encode():
                self.sampler_ran.add(int(parts[0]))

    def sample(self):
        # Every job while the table is small; in long runs, the jobs of the last
        # two minutes, with every job in one sample of SAMPLE_FULL_EVERY.
        window = ""
        if self.sampler_rows > SAMPLE_FULL_ROWS and self.sampler_samples % SAMPLE_FULL_EVERY:
            window = " AND job_id IN (SELECT id FROM walq.jobs WHERE created_at > now() - " \
                     "interval '120 s')"
        rc, out, err = self.sql.run(
            "SELECT job_id FROM walq.job_status WHERE consumer_group = '%s' AND status = 'done'%s"
            % (GX, window), app="faultgen sampler", timeout=60)
        if rc != 0:
            self.sampler_errors += 1
            return
        ts = now()
        self.read_log()   # after the sample: a run logged before its outcome is in it
        self.sampler_samples += 1
        if not window:
            self.sampler_rows = out.count("\n")
        for x in out.split():
            i = int(x)
            if i not in self.sampler_ran and i not in self.sampler_bad:
                self.sampler_bad[i] = ts
                self.finding("done-before-run",
                             "job %d was done in group %s at %.2f s with no run of its "
                             "handler logged" % (i, GX, self.t(ts)))
        # The sql group: effects and done outcomes in one snapshot.
        rc, out, err = self.sql.run(
            "SELECT s.job_id, s.status, (SELECT count(*) FROM effects e WHERE e.job_id = s.job_id)"
            " FROM walq.job_status s WHERE s.consumer_group = '%s' AND"
            " (SELECT count(*) FROM effects e WHERE e.job_id = s.job_id)"
            " <> CASE WHEN s.status = 'done' THEN 1 ELSE 0 END%s" % (GS, window),
            app="faultgen sampler", timeout=60)
        if rc == 0:
            for line in out.split("\n"):
                if line == "":
                    continue
                i, st, n = line.split("\t")
                if int(i) not in self.gs_bad:
                    self.gs_bad[int(i)] = now()
                    self.finding("sql-effects-snapshot",
                                 "job %s in group %s: status %s with %s effects rows in the "
                                 "same snapshot at %.2f s" % (i, GS, st, n, self.t()))

    def sampler(self):
        while not self.stopping.is_set():
            t = now()
            try:
                self.sample()
            except Exception as e:
                self.finding("test-error", "sampler: %r" % e)
            # every 200 ms, or half the time when a sample takes longer
            took = now() - t
            time.sleep(max(0.2 - took, took))

    # -- drain --
    PENDING = """SELECT s.consumer_group, s.status, count(*) FROM walq.job_status s
  LEFT JOIN walq.outcomes o ON o.group_name = s.consumer_group AND o.job_id = s.job_id
 WHERE s.status NOT IN ('done', 'dead')
   AND NOT (s.status = 'scheduled' AND o.run_at > now() + interval '1 day')
 GROUP BY 1, 2 ORDER BY 1, 2"""

    def drain(self):
        deadline = now() + self.drain_timeout
        last = 0
        before, moved = None, now()
        while True:
            try:
                rows = self.sql.rows(self.PENDING, app="faultgen drain")
            except RuntimeError as e:
                rows = [["?", str(e)[:80], "?"]]
            if not rows:
                return True
            if rows != before:
                before, moved = rows, now()
            if now() - last >= 10:
                self.say("draining: " + ", ".join("%s %s %s" % tuple(r) for r in rows))
                last = now()
            stalled = now() - moved > STALL
            if now() > deadline or stalled:
                stuck = self.sql.rows(
                    "SELECT s.job_id, s.consumer_group, s.status, s.attempts, j.run_at, "
                    "left(regexp_replace(coalesce(s.last_error, ''), '\\s+', ' ', 'g'), 160) "
                    "FROM walq.job_status s JOIN walq.jobs j ON j.id = s.job_id "
                    "LEFT JOIN walq.outcomes o ON o.group_name = s.consumer_group AND "
                    "o.job_id = s.job_id WHERE s.status NOT IN ('done', 'dead') AND NOT "
                    "(s.status = 'scheduled' AND o.run_at > now() + interval '1 day') "
                    "ORDER BY 1 LIMIT 25")
                text = "\n".join("    " + " | ".join(r) for r in stuck)
                tails = "\n".join("  %s:\n%s" % (c["name"], self.tail(c, 8))
                                  for c in self.consumers.values())
                self.finding("drain", "the groups did not drain (%s): %s\n  first "
                             "stuck jobs (id | group | status | attempts | run_at | "
                             "last_error):\n%s\n  consumer logs:\n%s"
                             % ("no progress for %d s" % STALL if stalled else
                                "deadline of %d s" % self.drain_timeout,
                                ", ".join("%s %s %s" % tuple(r)
                                                              for r in rows), text, tails))
                return False
            time.sleep(1)

    def stop_consumers(self):
        self.stopping.set()
        for c in self.consumers.values():
            p = c["proc"]
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for c in self.consumers.values():
            p = c["proc"]
            if p is None:
                continue
            try:
                rc = p.wait(45)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                self.finding("consumer-exit", "consumer %s did not stop within 45 s of SIGTERM; "
                             "last log lines:\n%s" % (c["name"], self.tail(c)))
                continue
            if rc != 0:
                self.finding("consumer-exit", "consumer %s exited %s after SIGTERM; last log "
                             "lines:\n%s" % (c["name"], rc, self.tail(c)))

    # -- the checks --
    def check(self):
        plan = self.plan
        jobs_by_key = {}
        op_of = {}
        for o in plan["ops"]:
            for idx, j in enumerate(o.get("jobs", [])):
                jobs_by_key[j["k"]] = j
                op_of[j["k"]] = (o, idx)

        def rolled_back(k):
            o, idx = op_of[k]
            st = self.op_state.get(o["op"])
            if st in ("rolledback", "skipped", None):
                return True
            if o.get("end") == "savepoint":
                a, b = o["sp"]
                return a <= idx < b
            return False

        table = {}
        dup_keys = []
        for i, q, k, dk in self.sql.rows(
                "SELECT id, queue, coalesce(payload->>'wk', ''), coalesce(dedup_key, '') "
                "FROM walq.jobs"):
            if k in table:
                dup_keys.append(k)
            table[k] = int(i)
        unknown = [k for k in table if k not in jobs_by_key]
        if dup_keys:
            self.finding("test-error", "keys inserted twice: %s" % dup_keys[:10])
        if unknown:
            self.finding("test-error", "rows in walq.jobs the plan does not know: %s"
                         % unknown[:10])

        committed = {}     # job id -> job
        rb_keys, rb_ids = set(), set()
        missing = []
        partial = []
        for o in plan["ops"]:
            st = self.op_state.get(o["op"])
            present = [j for j in o.get("jobs", []) if j["k"] in table]
            for idx, j in enumerate(o.get("jobs", [])):
                if rolled_back(j["k"]):
                    rb_keys.add(j["k"])
                    if j.get("id") is not None:
                        rb_ids.add(j["id"])
                    if j["k"] in table:
                        self.finding("rolled-back", "job %s of %s op %d (%s) is in walq.jobs as "
                                     "id %d" % (j["k"], o["kind"], o["op"], o.get("end"),
                                                table[j["k"]]))
                    continue
                if j["k"] in table:
                    committed[table[j["k"]]] = j
                    if j.get("id") is not None and j["id"] != table[j["k"]]:
                        self.finding("test-error", "job %s has id %d, not %d" % (
                            j["k"], table[j["k"]], j["id"]))
                elif st == "committed" and not j.get("dk") and not o.get("dk"):
                    missing.append((o["op"], o["kind"], j["k"]))
            if st == "uncertain" and o["kind"] not in ("walqpub",):
                want = [j for idx, j in enumerate(o.get("jobs", []))
                        if not rolled_back(j["k"]) and not j.get("dk")]
                have = [j for j in want if j["k"] in table]
                if have and len(have) != len(want):
                    partial.append(o["op"])
        # ids that rolled-back ops saw (RETURNING before their ROLLBACK)
        for o in plan["ops"]:
            if self.op_state.get(o["op"]) == "rolledback" and o["kind"] != "draw":
                rb_ids.update(int(x) for x in self.op_ids.get(o["op"], []))
            if o.get("end") == "savepoint" and o["kind"] in ("explicit", "early"):
                a, b = o["sp"]
                rb_ids.update(j["id"] for j in o["jobs"][a:b] if j.get("id"))
        rb_ids -= set(committed)   # a RETURNING id of a savepoint part that stayed
        # dedup keys: duplicates are skipped, but a key used by a committed
        # transaction went to at least one job
        used, kept = set(), set()
        for o in plan["ops"]:
            for j in o.get("jobs", []):
                if j.get("dk"):
                    if self.op_state.get(o["op"]) == "committed" and not rolled_back(j["k"]):
                        used.add((j["q"], j["dk"]))
                    if j["k"] in table:
                        kept.add((j["q"], j["dk"]))
        if used - kept:
            self.finding("dedup", "dedup keys of committed transactions with no job in "
                         "walq.jobs: %s" % sorted(used - kept)[:10])
        ndedup = sum(1 for o in plan["ops"] for j in o.get("jobs", [])
                     if j.get("dk") and j["k"] in table)
        self.say("dedup: %d jobs with a key inserted, over %d keys" % (ndedup, len(kept)))
        if missing:
            self.finding("test-error", "%d jobs of committed transactions are not in walq.jobs,"
                         " e.g. %s" % (len(missing), missing[:5]))
        if partial:
            self.finding("test-error", "transactions of uncertain outcome half in walq.jobs: %s"
                         % partial[:5])
        ops_by_state = collections.Counter(self.op_state.values())
        self.say("producers: operations %s; %d jobs committed, %d rolled back, %d retries of "
                 "operations that could not connect or met a read-only primary"
                 % (" ".join("%s=%d" % kv for kv in sorted(ops_by_state.items())),
                    len(committed), len(rb_keys), self.retries))

        # -- statuses --
        status = {}
        record = {}   # (id, group) -> where the status comes from
        for i, g, st, att, err, part, src in self.sql.rows(
                "SELECT s.job_id, s.consumer_group, s.status, s.attempts, "
                "left(regexp_replace(coalesce(s.last_error, ''), '\\s+', ' ', 'g'), 200), "
                "walq.partition_of(s.job_id, %d), CASE "
                "WHEN EXISTS (SELECT 1 FROM walq.outcomes o WHERE o.group_name = "
                "s.consumer_group AND o.job_id = s.job_id) THEN 'an outcomes row' "
                "WHEN walq.done_in_batch(s.consumer_group, s.job_id) THEN 'a batch row' "
                "WHEN s.status = 'done' THEN 'nothing but done' ELSE 'nothing' END "
                "FROM walq.job_status s" % max(1, plan["partitions"])):
            i = int(i)
            if (i, g) in status:
                self.finding("one-outcome", "job %d has two rows in walq.job_status for group %s"
                             % (i, g))
            status[(i, g)] = (st, int(att), err, int(part))
            record[(i, g)] = src
        multi = self.sql.rows(
            "SELECT g, job_id, count(*), string_agg(src, ',') FROM ("
            " SELECT group_name g, job_id, 'outcomes:' || status src FROM walq.outcomes"
            " UNION ALL SELECT group_name, unnest(job_ids), 'batch ' || id FROM"
            " walq.outcome_batches) x GROUP BY 1, 2 HAVING count(*) > 1 ORDER BY 2")
        for g, i, n, src in multi:
            self.finding("one-outcome", "job %s has %s outcome records in group %s: %s"
                         % (i, n, g, src))
        foreign = self.sql.rows(
            "SELECT o.group_name, o.job_id, o.status FROM walq.outcomes o WHERE NOT EXISTS "
            "(SELECT 1 FROM walq.jobs j WHERE j.id = o.job_id) LIMIT 20")
        for g, i, st in foreign:
            self.finding("rolled-back", "group %s recorded %s for job %s, which is not in "
                         "walq.jobs" % (g, st, i))

        # -- the handler log --
        runs = collections.defaultdict(list)     # (id, group) -> [(attempt, time, key, letter)]
        bad_lines = 0
        with open(self.log_path, "rb") as fh:
            for raw in fh:
                # (split on single spaces: the key is empty when the handler
                # read no payload, its consumer killed before writing it)
                parts = raw.decode("utf-8", "replace").rstrip("\n").split(" ")
                if len(parts) != 7 or not parts[0].isdigit() or not parts[1].isdigit():
                    bad_lines += 1
                    continue
                i, a, g, k, letter, ts, pid = parts
                runs[(int(i), g)].append((int(a), float(ts), k, letter))
        if bad_lines:
            self.finding("test-error", "%d malformed lines in the handler log" % bad_lines)
        nruns = sum(len(v) for v in runs.values())

        events = sorted(self.events)

        def explained(t1, t2, i):
            part = None
            if plan["partitions"] > 1:
                part = "gx%d" % status.get((i, GX), (None, 0, "", 0))[3]
            else:
                part = "gx"
            for s, e, scope, what in events:
                if scope not in (None, part):
                    continue
                if s <= t2 and e >= t1 - RERUN_SLACK:
                    return what
            return None

        reruns = collections.Counter()
        bad = collections.Counter()

        def viol(inv, text):
            self.finding(inv, text)

        for (i, g), rs in runs.items():
            if g != GX:
                viol("test-error", "a handler logged group %s for job %d" % (g, i))
                continue
            keys = {k for _, _, k, _ in rs}
            if i not in committed:
                what = "rolled back" if (keys & rb_keys or i in rb_ids) else "not committed"
                viol("rolled-back", "job %d (%s), %s, ran %d times in group %s: %s"
                     % (i, ",".join(sorted(keys)), what, len(rs), g,
                        self.fmt_runs(rs)))
                continue
            j = committed[i]
            if keys - {""} != {j["k"]}:
                viol("payload", "job %d (%s) ran with the payload of %s" % (i, j["k"], keys))
            for a, ts, k, letter in rs:
                if k == "":
                    why = explained(ts - 0.5, ts, i)
                    if why:
                        reruns["no payload: " + why] += 1
                    else:
                        viol("payload", "job %d (%s) attempt %d ran with an empty payload at "
                             "%.2f s, with no consumer killed around then"
                             % (i, j["k"], a, self.t(ts)))
                    continue
                want = j["b"][a - 1] if 1 <= a <= len(j["b"]) else "X"
                if letter != want:
                    viol("test-error", "job %d attempt %d: handler read %s, plan says %s"
                         % (i, a, letter, want))

        timed_out = self.timeouts()
        counts = collections.Counter()
        for i, j in committed.items():
            for g, (pst, patt) in predict(j).items():
                got = status.get((i, g))
                counts[(g, pst)] += 1
                if got is None:
                    viol("one-outcome", "job %d (%s, queue %s) has no row in walq.job_status for "
                         "group %s" % (i, j["k"], j["q"], g))
                    continue
                st, att, err, part = got
                rs = sorted(runs.get((i, g), []), key=lambda r: r[1])
                desc = "job %d (%s, %s, run_at %s, behaviour %s, max_attempts %d)" % (
                    i, j["k"], j["q"], j["ra"], j["b"], j["m"])
                desc += " [%s; status from %s]" % (self.origin(i, j, op_of), record[(i, g)])
                slow = sorted(a for (x, a) in timed_out
                              if x == i and j["b"][a - 1:a] != "H") if g == GX else []
                suspect = "test-suspect (a handler without H timed out: machine too slow?)"
                if slow:
                    desc += " [attempts %s timed out though not H]" % slow
                if st != pst:
                    inv = "final-status"
                    if g == GX and (slow or ("timed out" in err and "H" not in j["b"])):
                        # the handler itself was too slow: the test's doing, not walq's
                        inv = suspect
                    viol(inv, "%s in group %s: status %s attempts %d, expected %s "
                         "after %d; runs logged %s; last_error: %s"
                         % (desc, g, st, att, pst, patt, self.fmt_runs(rs), err))
                    continue
                if g == GS:
                    if att != patt:
                        viol("attempts", "%s in group %s: %s with attempts %d, expected %d"
                             % (desc, g, st, att, patt))
                    continue
                # the exec group: attempts against the runs logged
                logged = sorted({a for a, _, _, _ in rs})
                if st == "scheduled":
                    if rs:
                        viol("far-future-ran", "%s ran in group %s: %s" % (desc, g, rs))
                    continue
                if not rs:
                    viol("never-ran", "%s is %s in group %s (attempts %d) but its handler never "
                         "ran" % (desc, st, g, att))
                    continue
                if logged != list(range(1, att + 1)):
                    viol(suspect if slow else "attempts/" + record[(i, g)].split()[-1].strip("()"),
                         "%s in group %s: %s with attempts %d, but the attempts "
                         "logged are %s (runs: %s)%s"
                         % (desc, g, st, att, logged, self.fmt_runs(rs),
                            "" if att == patt else "; the plan says %d" % patt))
                    continue
                if att != patt:
                    viol(suspect if slow else "attempts/" + record[(i, g)].split()[-1].strip("()"),
                         "%s in group %s: %s with attempts %d, expected %d; runs %s; "
                         "last_error: %s" % (desc, g, st, att, patt, self.fmt_runs(rs), err))
                seen = {}
                for a, ts, k, letter in rs:
                    if a in seen:
                        why = explained(seen[a], ts, i)
                        if why:
                            reruns[why] += 1
                        else:
                            viol("rerun", "%s: attempt %d ran twice in group %s (at %.2f s and "
                                 "%.2f s) with no fault or consumer restart in between"
                                 % (desc, a, g, self.t(seen[a]), self.t(ts)))
                    seen[a] = ts

        # -- the sql group's effects --
        eff = collections.Counter()
        for i, n in self.sql.rows("SELECT job_id, count(*) FROM effects GROUP BY 1"):
            eff[int(i)] = int(n)
        for i, n in eff.items():
            if i in rb_ids or i not in committed:
                viol("sql-effects", "effects hold %d rows for job %d, which is %s"
                     % (n, i, "rolled back" if i in rb_ids else "not a committed job"))
        for i, j in committed.items():
            if j["q"] not in GROUP_QUEUES[GS]:
                if eff.get(i):
                    viol("sql-effects", "job %d of queue %s (not read by %s) has %d effects"
                         % (i, j["q"], GS, eff[i]))
                continue
            st = status.get((i, GS), ("missing",))[0]
            want = 1 if st == "done" else 0
            if eff.get(i, 0) != want:
                viol("sql-effects", "job %d (%s, %s; status from %s) is %s in group %s with %d "
                     "effects rows, expected %d" % (i, j["k"], self.origin(i, j, op_of),
                                                    record.get((i, GS)), st, GS, eff.get(i, 0),
                                                    want))
        for i in rb_ids:
            for g in (GX, GS):
                if (i, g) in status:
                    viol("rolled-back", "rolled-back id %d shows in walq.job_status" % i)

        # what the jobs seen done before they ran were
        if self.sampler_bad:
            kinds = collections.Counter()
            never = []
            for i in sorted(self.sampler_bad):
                j = committed.get(i)
                if j is None:
                    kinds["not a committed job"] += 1
                    continue
                kinds[self.origin(i, j, op_of)] += 1
                if not runs.get((i, GX)):
                    never.append(i)
            self.summaries.append("done-before-run: %d jobs seen done in group %s before any "
                                  "run was logged, by producer: %s; %d of them never ran at all"
                                  % (len(self.sampler_bad), GX, dict(kinds), len(never)))
        if self.gs_bad:
            kinds = collections.Counter(
                self.origin(i, committed[i], op_of) if i in committed else "not committed"
                for i in self.gs_bad)
            self.summaries.append("sql-effects-snapshot: %d jobs seen done in group %s without "
                                  "their effects row, by producer: %s"
                                  % (len(self.gs_bad), GS, dict(kinds)))
        self.say("handler runs: %d over %d jobs; re-runs of an attempt explained by a fault or "
                 "restart: %s" % (nruns, len(runs), dict(reruns) or 0))
        self.say("expected outcomes: %s" % " ".join(
            "%s:%s=%d" % (g, s, n) for (g, s), n in sorted(counts.items())))
        self.say("sampler: %d samples (%d failed during faults), %d jobs seen done with no run"
                 % (self.sampler_samples, self.sampler_errors, len(self.sampler_bad)))
        for c in self.consumers.values():
            self.say("consumer %s: %d starts, %d exits on its own" % (
                c["name"], c["starts"], len(c["exits"])))

    def fmt_runs(self, rs):
        """A job's runs, with the faults and restarts around them."""
        if not rs:
            return "[]"
        text = "[" + ", ".join("%d%s@%.2f" % (a, l, self.t(ts)) for a, ts, _, l in rs) + "]"
        lo, hi = rs[0][1] - RERUN_SLACK, rs[-1][1] + 1
        near = ["%s%s@%.2f" % (what, "(" + scope + ")" if scope else "", self.t(s))
                for s, e, scope, what in sorted(self.events) if s <= hi and e >= lo]
        return text + (" near " + ", ".join(near) if near else "")

    def origin(self, i, j, op_of):
        o, _ = op_of[j["k"]]
        kind = o["kind"]
        if kind == "explicit":
            kind += " low id" if i < 1_000_000 else " high id"
        elif kind == "early":
            kind = "id drawn early (op %d), inserted at %.1f s" % (o["draw"], o["at"])
        return kind

    # -- the run --
    def wait_streaming(self, secs=60):
        deadline = now() + secs
        slots = [c["slot"] for c in self.consumers.values()]
        while now() < deadline:
            try:
                n = self.sql.rows("SELECT count(*) FROM pg_replication_slots WHERE active AND "
                                  "slot_name IN (%s)" % ",".join(lit(s) for s in slots))[0][0]
                if int(n) == len(slots):
                    return True
            except RuntimeError:
                pass
            time.sleep(0.2)
        return False

    def run(self):
        os.makedirs(os.path.join(self.work, "ops"), exist_ok=True)
        for o in self.plan["ops"]:
            if o["kind"] == "draw":
                self.draw_done[o["op"]] = threading.Event()
        self.t0 = now()
        sup = threading.Thread(target=self.supervise, daemon=True)
        sup.start()
        if not self.wait_streaming():
            self.finding("consumer-exit", "the consumers did not all stream within 60 s:\n" +
                         "\n".join(self.tail(c) for c in self.consumers.values()))
        self.t0 = now()
        self.say("consumers stream; producers and faults start")
        threads = [threading.Thread(target=self.lane, args=(n,), daemon=True)
                   for n in range(self.plan["lanes"])]
        for th in threads:
            th.start()
        fth = threading.Thread(target=self.faults, daemon=True)
        fth.start()
        sth = threading.Thread(target=self.sampler, daemon=True)
        sth.start()
        fth.join()
        self.say("faults over")
        for th in threads:
            th.join()
        self.say("producers done")
        for c in self.consumers.values():
            c["held"] = False
        drained_at = now()
        ok = self.drain()
        self.say("drained in %.1f s" % (now() - drained_at) if ok else "not drained")
        time.sleep(0.5)       # one more sample after the drain
        self.stop_consumers()
        try:
            self.check()
        except Exception as e:
            import traceback
            self.finding("test-error", "the checks failed: %s" % traceback.format_exc())
        self.report()
        return 0 if not self.findings else 1

    def report(self):
        by = collections.Counter(inv for inv, _ in self.findings)
        if not self.findings:
            print("faultgen: every invariant holds", flush=True)
            return
        print("faultgen: %d findings: %s" % (len(self.findings), " ".join(
            "%s=%d" % kv for kv in sorted(by.items()))), flush=True)
        for line in self.summaries:
            print("  summary: " + line, flush=True)
        shown = collections.Counter()
        order = {inv: n for n, inv in enumerate(dict.fromkeys(inv for inv, _ in self.findings))}
        for inv, text in sorted(self.findings, key=lambda f: order[f[0]]):
            shown[inv] += 1
            if shown[inv] <= REPORT_MAX:
                print("  [%s] %s" % (inv, text), flush=True)
            elif shown[inv] == REPORT_MAX + 1:
                print("  [%s] ... %d more of this kind" % (inv, by[inv] - REPORT_MAX), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plan")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--seconds", type=int, default=75)
    p.add_argument("--exclude", default="")
    p.add_argument("--out")
    p.add_argument("--quiet", action="store_true")
    p = sub.add_parser("run")
    p.add_argument("--plan", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--walq", required=True)
    p.add_argument("--handler", required=True)
    p.add_argument("--drain-timeout", type=int, default=240)
    args = ap.parse_args()

    if args.cmd == "plan":
        exclude = [x for x in args.exclude.replace(" ", ",").split(",") if x]
        known = {x for v in FEATURES.values() for x in v}
        for x in exclude:
            if x not in known:
                sys.exit("faultgen: unknown feature to exclude: %s (known: %s)"
                         % (x, ", ".join(sorted(known))))
        plan = Planner(args.seed, args.seconds, exclude).plan()
        if args.out:
            with open(args.out, "w") as f:
                json.dump(plan, f, sort_keys=True)
        if not args.quiet:
            print(plan_summary(plan))
        print("plan digest: %s" % plan_digest(plan))
        return 0
    with open(args.plan) as f:
        plan = json.load(f)
    r = Runner(plan, args.work, args.walq, args.handler, args.drain_timeout)
    return r.run()


if __name__ == "__main__":
    sys.exit(main())

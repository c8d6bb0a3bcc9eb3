#!/usr/bin/env python3
"""An example walq coprocess worker (standard library only).

    walq consume --group mail --queue emails --coprocess --concurrency 2 \\
        -- python3 examples/worker.py

walq starts this program once per worker and keeps it running.  Each line on
stdin is a job; each line this program writes to stdout is the reply to one
job, in any order.  docs/coprocess.md describes the protocol.

    request  {"id": 17, "queue": "emails", "attempt": 1, "group": "mail",
              "payload": {...}}
    reply    {"id": 17, "ok": true}
             {"id": 17, "ok": false, "error": "why", "retry": false}

This worker runs up to WORKER_THREADS jobs at once (default 8) on threads, so
its replies come back in the order the jobs finish, not the order they came.
What a job does depends on its payload:

    {"fail": true}    reply ok:false with an error (walq retries it, then
                      the job is dead)
    {"retry": true}   reply ok:false, retry:true
    {"crash": true}   exit with status 1 at once, as a bug would; walq fails
                      every job this worker had in flight and restarts it
    {"sleep": SECS}   sleep first (to try --timeout)
    anything else     done

With WORKER_LOG set to a file name, each job that gets this far appends a line
"ID ATTEMPT WORKER PID" to that file.

stdout carries replies only: log to stderr, which is walq's stderr.  When stdin
ends, walq wants the worker to stop: finish what is running, reply, and exit.
"""

import concurrent.futures
import json
import os
import sys
import threading
import time

out_lock = threading.Lock()
log_path = os.environ.get("WORKER_LOG")
worker = os.environ.get("WALQ_WORKER", "?")


def reply(msg):
    line = json.dumps(msg, separators=(",", ":")) + "\n"
    # One write per line under a lock, so that replies of two threads never
    # interleave; and flushed at once, since walq waits for it.
    with out_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def run(job):
    job_id = job["id"]
    payload = job.get("payload")
    if not isinstance(payload, dict):
        payload = {}
    try:
        if payload.get("sleep"):
            time.sleep(float(payload["sleep"]))
        if payload.get("fail"):
            reply({"id": job_id, "ok": False, "error": f"job {job_id} asked to fail"})
            return
        if payload.get("retry"):
            reply({"id": job_id, "ok": False, "retry": True, "error": "try again later"})
            return
        if log_path:
            line = f"{job_id} {job.get('attempt')} {worker} {os.getpid()}\n"
            # O_APPEND: lines of several workers do not overwrite each other.
            fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        reply({"id": job_id, "ok": True})
    except Exception as e:  # a failed job must still get its reply
        reply({"id": job_id, "ok": False, "error": f"{type(e).__name__}: {e}"})


def main():
    threads = int(os.environ.get("WORKER_THREADS", "8"))
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        for raw in sys.stdin.buffer:
            try:
                job = json.loads(raw)
                job_id = job["id"]
            except (ValueError, KeyError, TypeError) as e:
                # Without an id there is no one to reply to; walq's timeout
                # (if any) or a restart settles such a job.
                print(f"worker {worker}: bad request line: {e}", file=sys.stderr)
                continue
            payload = job.get("payload")
            if isinstance(payload, dict) and payload.get("crash"):
                print(f"worker {worker}: job {job_id} asked to crash", file=sys.stderr)
                sys.stderr.flush()
                os._exit(1)
            pool.submit(run, job)
    # stdin ended: the with block waited for the running jobs; now exit 0.


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""promcheck.py: a strict reader of Prometheus's text exposition format 0.0.4.

Reads a scrape on standard input.  Any line that is not a well-formed HELP,
TYPE or sample line fails (exit 1, naming the line), and so do: a sample
before its family's TYPE, a TYPE given twice, a series given twice, a
counter not named *_total, a histogram whose buckets are not cumulative in
ascending le order or whose +Inf bucket is not its _count, a value that is
not a number.  On success prints each sample as NAME{LABELS} VALUE with the
labels sorted by name, one a line, for the test to look up.

    curl -s http://127.0.0.1:9187/metrics | python3 promcheck.py > canon
"""
import math
import re
import sys

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
LVALUE = r'"(?:[^"\\\n]|\\[\\"n])*"'
NUMBER = r"(?:[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]Inf|NaN)"
HELP_RE = re.compile(r"^# HELP (" + NAME + r") ((?:[^\\\n]|\\[\\n])*)$")
TYPE_RE = re.compile(r"^# TYPE (" + NAME + r") (counter|gauge|histogram|summary|untyped)$")
SAMPLE_RE = re.compile(
    r"^(" + NAME + r")(?:\{((?:" + LABEL + "=" + LVALUE + r")(?:," + LABEL + "=" + LVALUE +
    r")*)?,?\})? (" + NUMBER + r")(?: -?[0-9]+)?$")
PAIR_RE = re.compile("(" + LABEL + ")=(" + LVALUE + ")")


def fail(lineno, line, why):
    sys.stderr.write("promcheck: line %d: %s: %r\n" % (lineno, why, line))
    sys.exit(1)


def unescape(v):
    return re.sub(r'\\(.)', lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), v[1:-1])


def main():
    text = sys.stdin.read()
    if not text:
        fail(0, "", "empty scrape")
    if not text.endswith("\n"):
        fail(0, text[-40:], "the scrape does not end with a newline")
    types, helps, seen = {}, set(), set()
    hist = {}  # (family, labels without le) -> [(le, count)], and sums/counts
    counts = {}
    out = []
    for lineno, line in enumerate(text[:-1].split("\n"), 1):
        if line.startswith("#"):
            m = HELP_RE.match(line)
            if m:
                if m.group(1) in helps:
                    fail(lineno, line, "HELP given twice")
                helps.add(m.group(1))
                continue
            m = TYPE_RE.match(line)
            if m:
                if m.group(1) in types:
                    fail(lineno, line, "TYPE given twice")
                types[m.group(1)] = m.group(2)
                continue
            fail(lineno, line, "a comment that is neither HELP nor TYPE")
        m = SAMPLE_RE.match(line)
        if not m:
            fail(lineno, line, "not a sample line")
        name, labeltext, value = m.group(1), m.group(2) or "", m.group(3)
        labels = {}
        for k, v in PAIR_RE.findall(labeltext):
            if k in labels:
                fail(lineno, line, "label %s given twice" % k)
            labels[k] = unescape(v)
        family, suffix = name, ""
        for s in ("_bucket", "_sum", "_count"):
            if name.endswith(s) and types.get(name[:-len(s)]) == "histogram":
                family, suffix = name[:-len(s)], s
        if family not in types:
            fail(lineno, line, "sample before its family's TYPE")
        kind = types[family]
        if kind == "histogram" and suffix == "":
            fail(lineno, line, "a histogram's sample is _bucket, _sum or _count")
        if kind == "counter" and not name.endswith("_total"):
            fail(lineno, line, "a counter not named *_total")
        v = float(value)
        if kind == "counter" and not (v >= 0):
            fail(lineno, line, "a counter below 0")
        key = name + "{" + ",".join('%s=%r' % kv for kv in sorted(labels.items())) + "}"
        if key in seen:
            fail(lineno, line, "the same series twice")
        seen.add(key)
        if suffix:
            rest = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
            if suffix == "_bucket":
                if "le" not in labels:
                    fail(lineno, line, "a bucket without le")
                le = float(labels["le"])
                b = hist.setdefault((family, rest), [])
                if b and (le <= b[-1][0] or v < b[-1][1]):
                    fail(lineno, line, "buckets not cumulative in ascending le order")
                b.append((le, v))
            elif suffix == "_count":
                counts[(family, rest)] = (v, lineno, line)
        out.append("%s{%s} %s" % (name, ",".join('%s="%s"' % kv for kv in sorted(labels.items())),
                                  value))
    for key, (c, lineno, line) in counts.items():
        b = hist.get(key)
        if not b or not math.isinf(b[-1][0]) or b[-1][1] != c:
            fail(lineno, line, "the +Inf bucket is not the histogram's _count")
    sys.stdout.write("\n".join(out) + "\n")


main()

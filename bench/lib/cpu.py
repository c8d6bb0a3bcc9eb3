#!/usr/bin/env python3
"""CPU time of a PostgreSQL server, in milliseconds: the postmaster's own
(utime + stime), its live children's, and that of children that exited and
were reaped (the postmaster's cutime + cstime).  The difference of two
readings is what every server process spent in between, including backends
that started and ended meanwhile.

    cpu.py POSTMASTER_PID
"""
import os
import sys

TICK_MS = 1000.0 / os.sysconf("SC_CLK_TCK")


def stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    # The command name is in parentheses and may hold spaces.
    return text[text.rindex(")") + 2:].split()


def main():
    pm = sys.argv[1]
    ticks = 0
    for name in os.listdir("/proc"):
        if not name.isdigit() or name == pm:
            continue
        try:
            f = stat_fields(name)
        except (OSError, ValueError):
            continue  # gone meanwhile: its time is in the postmaster's cutime
        # After the name: state, ppid, ..., utime is field 14 of stat, 12 here.
        if f[1] == pm:
            ticks += int(f[11]) + int(f[12])
    f = stat_fields(pm)
    ticks += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    print(f"{ticks * TICK_MS:.0f}")


main()

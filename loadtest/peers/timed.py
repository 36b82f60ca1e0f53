#!/usr/bin/env python3
"""Runs one command pinned to a CPU and records what it cost.

usage: timed.py RESULT.json CPU STDOUT [--stdin FILE] -- CMD...

stdout goes to STDOUT (a file, or /dev/null), stderr to RESULT's .err.
RESULT.json gets wall seconds, user and system CPU seconds and peak RSS of
the command (os.wait4), and the load average before and after. CPU time is
what a shared machine cannot inflate much; wall time is what it can.
Standard library only.
"""
import json
import os
import subprocess
import sys
import time


def main():
    args = sys.argv[1:]
    result, cpu, stdout = args[0], int(args[1]), args[2]
    rest = args[3:]
    stdin = None
    if rest[0] == "--stdin":
        stdin, rest = rest[1], rest[2:]
    assert rest[0] == "--", "usage: timed.py RESULT.json CPU STDOUT [--stdin FILE] -- CMD..."
    cmd = rest[1:]
    err_path = os.path.splitext(result)[0] + ".err"
    load_before = os.getloadavg()
    with open(stdout, "wb") as out, open(err_path, "wb") as err, \
            open(stdin or os.devnull, "rb") as inp:
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdin=inp, stdout=out, stderr=err,
                             preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
    code = os.waitstatus_to_exitcode(status)
    load_after = os.getloadavg()
    rec = {
        "cmd": cmd, "cpu": cpu, "stdout": stdout, "exit_code": code,
        "wall_s": wall, "user_s": ru.ru_utime, "sys_s": ru.ru_stime,
        "cpu_s": ru.ru_utime + ru.ru_stime, "peak_rss_bytes": ru.ru_maxrss * 1024,
        "load_before": load_before, "load_after": load_after,
    }
    with open(result, "w") as f:
        json.dump(rec, f, indent=1)
    print(f"  {os.path.basename(os.path.splitext(result)[0]):<22} {wall:7.2f} s wall {rec['cpu_s']:7.2f} s CPU "
          f"{rec['peak_rss_bytes'] / 2**20:7.1f} MiB; load {load_before[0]:.2f} -> {load_after[0]:.2f}",
          file=sys.stderr)
    sys.exit(0 if code == 0 else 1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Critical-path timeline of one measured boot of ours, from its bench-collect document.

usage: profile.py BOOT.bench.json [...]   (files are under build/bench/<stamp>/<variant>-N/)

For each unit: systemd's activation start, the first line the agent logged (so the
time before it = sandbox setup + interpreter start + imports), its child processes
(taskstats: start..exit), and the end; plus the networkd DHCP lease and
network-online.target from the guest journal. Guest monotonic seconds.
"""
import json
import re
import sys


def timeline(b):
    ev = []
    for line in b.get("journal_net", "").splitlines():
        m = re.match(r"\[\s*([0-9.]+)\]", line)
        if m and "DHCPv4 address" in line:
            ev.append((float(m.group(1)), "networkd: DHCPv4 lease"))
    first_log = {}
    for line in b.get("journal_agent", "").splitlines():
        m = re.match(r"\[\s*([0-9.]+)\] \S+ (\S+?)\[(\d+)\]: (.*)", line)
        if m and m.group(2) != "systemd":
            first_log.setdefault(int(m.group(3)), (float(m.group(1)), m.group(4)[:70]))
    procs = {p[0]: p for p in b.get("all_procs", [])}
    for u, d in b.get("units", {}).items():
        s = int(d.get("InactiveExitTimestampMonotonic") or 0) / 1e6
        e = int(d.get("ActiveEnterTimestampMonotonic") or 0) / 1e6
        if not s:
            ev.append((0.0, "%s: not started (condition %s)" % (u, d.get("ConditionResult"))))
            continue
        ev.append((s, "%s: activating" % u))
        main = int(d.get("ExecMainPID") or 0)
        if main in first_log:
            t, msg = first_log[main]
            ev.append((t, "  first log line (+%.2f s after activating): %s" % (t - s, msg)))
        for p in procs.values():
            if p[1] == main:
                ev.append((p[3], "  child %s %.2f s (%.2f s CPU)" % (p[2], p[4] - p[3], p[5])))
        if e:
            ev.append((e, "%s: active (%.2f s)" % (u, e - s)))
    return sorted(ev)


def main(paths):
    for path in paths:
        b = json.load(open(path))
        print("== %s (%s)" % (path, b.get("variant")))
        for t, what in timeline(b):
            print("%8.3f  %s" % (t, what))


if __name__ == "__main__":
    main(sys.argv[1:])

#!/usr/bin/env python3
"""Critical-path timeline of one measured boot of ours, from its bench-collect document.

usage: profile.py BOOT.bench.json [...]   (files are under build/bench/<stamp>/<variant>-N/)
       profile.py --segments RUNDIR [VARIANT]   median critical-path segments of ours' boots

For each unit: systemd's activation start, the first line the agent logged (so the
time before it = sandbox setup + interpreter start + imports), its child processes
(taskstats: start..exit), and the end; plus the networkd DHCP lease and
network-online.target from the guest journal. Guest monotonic seconds.
"""
import json
import os
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


UNIT = "azure-firstboot-%s.service"


def segments(b):
    """Critical-path segments (s) of one first boot of ours, from lease to Ready."""
    lease = [float(re.match(r"\[\s*([0-9.]+)", l).group(1))
             for l in b["journal_net"].splitlines() if "DHCPv4 address" in l][0]
    logs = {}
    for line in b["journal_agent"].splitlines():
        m = re.match(r"\[\s*([0-9.]+)\] \S+ (\S+?)\[(\d+)\]: (.*)", line)
        if m and m.group(2) != "systemd":
            logs.setdefault(int(m.group(3)), float(m.group(1)))

    def ts(unit, k):
        return int(b["units"][UNIT % unit][k]) / 1e6

    def start(u):
        return ts(u, "InactiveExitTimestampMonotonic")

    def end(u):
        return ts(u, "ActiveEnterTimestampMonotonic")

    units = [u for u in ("network-wait", "hostname", "user", "report-ready")
             if int(b["units"].get(UNIT % u, {}).get("InactiveExitTimestampMonotonic") or 0)]
    main = {u: int(b["units"][UNIT % u]["ExecMainPID"]) for u in units}
    kids = {}
    for p in b["all_procs"]:
        for u, pid in main.items():
            if p[1] == pid:
                kids.setdefault((u, p[2]), p)
    hc = kids.get(("hostname", "hostnamectl"))  # packages before issue 10
    nc = kids.get(("hostname", "networkctl"))
    online = int((b.get("targets") or {}).get("network-online.target", {}).get(
        "ActiveEnterTimestampMonotonic") or 0) / 1e6
    seg = {
        "network-wait: start -> first log (sandbox+interpreter+imports)":
            logs.get(main["network-wait"], start("network-wait")) - start("network-wait"),
        "lease -> network-wait starts": start("network-wait") - lease,
        "lease -> network-wait done": end("network-wait") - lease,
        "network-wait done -> network-online.target": (online - end("network-wait")) if online else None,
        "hostname: start -> hostnamectl (sandbox+interpreter+imports+IMDS)":
            (hc[3] - start("hostname")) if hc else None,
        "hostname: hostnamectl": (hc[4] - hc[3]) if hc else None,
        "hostname: start -> networkctl (sandbox+interpreter+imports+IMDS+set)":
            (nc[3] - start("hostname")) if nc and not hc else None,
        "hostname: networkctl": (nc[4] - nc[3]) if nc else None,
        "hostname: networkctl -> done (new lease, WireServer back)": (end("hostname") - nc[4]) if nc else None,
        "hostname: total": end("hostname") - start("hostname"),
    }
    if "user" in main:
        seg["user: total (parallel with hostname)"] = end("user") - start("user")
    seg.update({
        "report-ready: start -> first log (sandbox+interpreter+imports)":
            logs.get(main["report-ready"], start("report-ready")) - start("report-ready"),
        "report-ready: total": end("report-ready") - start("report-ready"),
        "gaps between units (systemd)": (start("hostname") - end("network-wait")) +
                                        (start("report-ready") - max(end(u) for u in main
                                                                     if u in ("hostname", "user"))),
        "lease -> report-ready done": end("report-ready") - lease,
    })
    return seg


def segment_summary(rundir, variant="ours"):
    import glob
    import statistics
    rows = []
    for f in sorted(glob.glob(os.path.join(rundir, variant + "-[0-9]*", "boot.bench.json"))):
        try:
            rows.append(segments(json.load(open(f))))
        except (KeyError, IndexError, ValueError):
            continue
    out = {}
    keys = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    for k in keys:
        v = [r[k] for r in rows if r.get(k) is not None]
        if v:
            out[k] = {"median": round(statistics.median(v), 3), "min": round(min(v), 3),
                      "max": round(max(v), 3), "n": len(v)}
    return out


def main(paths):
    if paths and paths[0] == "--segments":
        for k, v in segment_summary(paths[1], paths[2] if len(paths) > 2 else "ours").items():
            print("%-66s %6.3f s  (%.3f–%.3f, n=%d)" % (k, v["median"], v["min"], v["max"], v["n"]))
        return
    for path in paths:
        b = json.load(open(path))
        print("== %s (%s)" % (path, b.get("variant")))
        for t, what in timeline(b):
            print("%8.3f  %s" % (t, what))


if __name__ == "__main__":
    main(sys.argv[1:])

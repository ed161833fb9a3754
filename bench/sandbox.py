#!/usr/bin/env python3
"""What each group of sandbox directives costs a unit's start, measured in a guest
under QEMU/TCG (the bench's Debian 12 image with our .deb).

usage: sandbox.py [--deb DEB] [--workdir DIR] [--json OUT]

One boot of the ours image plus bench/sandbox/bench-sandbox, which runs /bin/true as
a transient oneshot service (systemd-run --wait) with each directive group of our
units, 9 rounds interleaved, after our units are done. Prints a table: per group,
the median of systemd's "Service runtime" (activating -> inactive) and of the
cgroup CPU time, and both minus the no-sandbox baseline. Run it under the VM lock:
    flock /work/vm.lock python3 bench/sandbox.py
"""

import argparse
import json
import os
import re
import shutil
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "vm"))
import harness as h  # noqa: E402


def customize(root, lf):
    src = os.path.join(HERE, "sandbox")
    shutil.copy(os.path.join(src, "bench-sandbox"), os.path.join(root, "usr/local/sbin/bench-sandbox"))
    os.chmod(os.path.join(root, "usr/local/sbin/bench-sandbox"), 0o755)
    shutil.copy(os.path.join(src, "bench-sandbox.service"),
                os.path.join(root, "etc/systemd/system/bench-sandbox.service"))
    h._chroot(root, ["systemctl", "enable", "bench-sandbox.service"], lf)


def table(doc):
    res = doc["results"]

    def med(name, key):
        v = [r[key] for r in res[name] if r.get(key) is not None and r["rc"] == 0]
        return statistics.median(v) if v else None

    base_rt, base_cpu = med("none", "runtime_s"), med("none", "cpu_s")
    lines = ["| directive group | start→exit median s | + vs none s | CPU median s | + CPU vs none s | failed |",
             "|---|---|---|---|---|---|"]
    for name, _props in doc["groups"]:
        rt, cpu = med(name, "runtime_s"), med(name, "cpu_s")
        bad = sum(1 for r in res[name] if r["rc"] != 0)
        f = lambda x: "%.3f" % x if x is not None else "-"  # noqa: E731
        lines.append("| %s | %s | %s | %s | %s | %d/%d |" % (
            name, f(rt), f(rt - base_rt) if rt is not None and base_rt is not None else "-",
            f(cpu), f(cpu - base_cpu) if cpu is not None and base_cpu is not None else "-",
            bad, len(res[name])))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--deb", default=None)
    ap.add_argument("--workdir", default=os.path.join(h.REPO, "build", "bench-sandbox"))
    ap.add_argument("--json", default=None, help="also write the raw results here")
    args = ap.parse_args(argv)
    deb = os.path.abspath(args.deb or h.find_deb() or "")
    if not os.path.isfile(deb):
        sys.exit("sandbox.py: no .deb (make deb)")
    key = h._hash(*[open(os.path.join(HERE, "sandbox", n), "rb").read()
                    for n in sorted(os.listdir(os.path.join(HERE, "sandbox")))])[:8]
    img = h.build_image("networkd", deb=deb, customize=customize, tag="bench-sandbox-" + key)
    if os.path.exists(args.workdir):
        shutil.rmtree(args.workdir)
    os.makedirs(args.workdir)
    with h.Fabric(args.workdir, {"vm_id": h.new_vm_id(), "computer_name": "sandbox-vm"}) as fab:
        boot = h.boot(img, args.workdir, "vm", h.new_vm_id(), fabric=fab, timeout=900)
    m = re.search(r"=====SANDBOX-BEGIN=====\r?\n(.*?)\r?\n=====SANDBOX-END=====", boot.serial(), re.S)
    if not m:
        sys.exit("sandbox.py: no result in %s (boot ended by %s)" % (boot.serial_log, boot.how))
    doc = json.loads(m.group(1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    print("Sandbox directive groups, /bin/true as a transient oneshot service, %d rounds, "
          "guest under QEMU/TCG (%s):" % (doc["rounds"], os.path.basename(deb)))
    print(table(doc))


if __name__ == "__main__":
    main()

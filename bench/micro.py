"""Host-side micro-benchmark: each unit of ours against the fabric emulator on loopback.

For every unit (network-wait, hostname, report-ready on a first boot, and network-wait
on an already-provisioned reboot): mean/min wall time of
``python3 -m azure_firstboot --root DIR --config F <unit>`` over N runs, each run a fresh
scratch root (as tests/demo.py sets one up), plus ``python3 -X importtime`` totals
(sum of the "self" column = time spent importing, and the number of modules imported).
Baselines: ``python3 -c pass`` and ``python3 -I -S -c pass`` on the same host.
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SRC = os.path.join(REPO, "src")
sys.path.insert(0, os.path.join(REPO, "tests"))
from fabric_emulator import Fabric  # noqa: E402

# Debian's python3, as in the image (a pyenv/venv python3 has more site imports)
PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
# user: useradd --root needs root; without it the step is disabled in the config
STEPS = ("network-wait", "hostname", "user", "report-ready") if os.geteuid() == 0 else \
    ("network-wait", "hostname", "report-ready")
VM_ID = "5C9F1C56-64F7-4D55-9A0B-6C2F0E8B7A31"


def scratch_root(fab):
    """A scratch VM tree (tests/demo.py's, the same files make demo uses)."""
    from demo import scratch_tree

    root = tempfile.mkdtemp(prefix="afb-micro.")
    scratch_tree(root, fab, VM_ID, "bench.conf", with_user="user" in STEPS)
    return root


def _env():
    return dict(os.environ, PYTHONPATH=SRC, PYTHONDONTWRITEBYTECODE="")


def shipped_script(workdir):
    """/usr/bin/azure-firstboot out of the built .deb (the units' ExecStart), or None."""
    import glob
    debs = sorted(glob.glob(os.path.join(REPO, "dist", "azure-firstboot_*_all.deb")),
                  key=os.path.getmtime)
    if not debs:
        return None
    p = subprocess.run("dpkg-deb --fsys-tarfile '%s' | tar -xO ./usr/bin/azure-firstboot" % debs[-1],
                       shell=True, stdout=subprocess.PIPE)
    if p.returncode != 0 or not p.stdout:
        return None
    path = os.path.join(workdir, "azure-firstboot")
    with open(path, "wb") as f:
        f.write(p.stdout)
    return path


def run_unit(root, step, importtime=False, script=None):
    argv = [PY]
    if importtime:
        argv += ["-X", "importtime"]
    argv += ([script] if script else ["-m", "azure_firstboot"])
    argv += ["--config", os.path.join(root, "bench.conf"), "--root", root, step]
    t0 = time.monotonic()
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(),
                       universal_newlines=True)
    took = time.monotonic() - t0
    if p.returncode != 0:
        raise RuntimeError("%s exited %d: %s" % (step, p.returncode, (p.stdout + p.stderr)[-800:]))
    return took, p.stderr


def parse_importtime(stderr):
    total_us = 0
    n = 0
    top = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        parts = line[len("import time:"):].split("|")
        try:
            self_us = int(parts[0])
            cum_us = int(parts[1])
        except (ValueError, IndexError):
            continue
        name = parts[2][1:].rstrip()
        total_us += self_us
        n += 1
        if not name.startswith(" "):  # top-level import (cumulative includes children)
            top.append((cum_us, name.strip()))
    top.sort(reverse=True)
    return {"import_s": round(total_us / 1e6, 4), "modules": n,
            "top": [{"module": m, "cumulative_s": round(c / 1e6, 4)} for c, m in top[:6]]}


def _baseline(argv, n):
    ts = []
    for _ in range(n):
        t0 = time.monotonic()
        subprocess.run(argv, check=True)
        ts.append(time.monotonic() - t0)
    return {"mean_s": round(statistics.mean(ts), 4), "min_s": round(min(ts), 4)}


def run(n=10, log=print):
    """Returns the micro-benchmark figures (dict). Each unit is run the way the systemd
    units run it (the console script from the .deb, if built) and as `python3 -m`."""
    out = {"runs": n, "python": subprocess.check_output(
        [PY, "-c", "import sys; print(sys.version.split()[0])"], universal_newlines=True).strip(),
        "python_path": PY, "units": {}}
    tmp = tempfile.mkdtemp(prefix="afb-micro-bin.")
    script = shipped_script(tmp)
    out["entry"] = "/usr/bin/azure-firstboot from the .deb" if script else "python3 -m azure_firstboot"
    keys = STEPS + ("network-wait (provisioned)",)
    times = {(k, m): [] for k in keys for m in ("entry", "-m")}
    try:
        with Fabric({"computer_name": "micro-vm", "vm_id": VM_ID.lower()}).start() as fab:
            for i in range(n + 1):  # run 0 only warms the page cache (not counted)
                for mode, sc in (("entry", script), ("-m", None)):
                    root = scratch_root(fab)
                    try:
                        for s in STEPS:
                            took, _ = run_unit(root, s, script=sc)
                            if i:
                                times[(s, mode)].append(took)
                        shutil.rmtree(os.path.join(root, "run"), ignore_errors=True)
                        took, _ = run_unit(root, "network-wait", script=sc)
                        if i:
                            times[("network-wait (provisioned)", mode)].append(took)
                    finally:
                        shutil.rmtree(root, ignore_errors=True)
            root = scratch_root(fab)
            try:
                imp = {}
                for s in STEPS:
                    imp[s] = parse_importtime(run_unit(root, s, importtime=True, script=script)[1])
                shutil.rmtree(os.path.join(root, "run"), ignore_errors=True)
                imp["network-wait (provisioned)"] = parse_importtime(
                    run_unit(root, "network-wait", importtime=True, script=script)[1])
            finally:
                shutil.rmtree(root, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for s in keys:
        ts, tm = times[(s, "entry")], times[(s, "-m")]
        out["units"][s] = {"mean_s": round(statistics.mean(ts), 4), "min_s": round(min(ts), 4),
                           "max_s": round(max(ts), 4), "m_mean_s": round(statistics.mean(tm), 4)}
        out["units"][s].update(imp[s])
    out["first_boot_total_mean_s"] = round(sum(out["units"][s]["mean_s"] for s in STEPS), 4)
    out["baseline"] = {
        "python3 -c pass": _baseline([PY, "-c", "pass"], n),
        "python3 -I -S -c pass": _baseline([PY, "-I", "-S", "-c", "pass"], n),
    }
    imp_pass = parse_importtime(subprocess.run(
        [PY, "-X", "importtime", "-c", "pass"], stderr=subprocess.PIPE,
        universal_newlines=True).stderr)
    out["baseline"]["python3 -c pass"].update(import_s=imp_pass["import_s"],
                                              modules=imp_pass["modules"])
    return out


def table(m):
    lines = ["| unit (host, emulator on loopback) | mean wall (%s) | min | mean wall (`python3 -m`) "
             "| import time (`-X importtime`, sum of self) | modules imported |" % m.get("entry", ""),
             "|---|---|---|---|---|---|"]
    order = list(STEPS) + ["network-wait (provisioned)"]
    for s in sorted(m["units"], key=lambda k: order.index(k) if k in order else 99):
        d = m["units"][s]
        lines.append("| %s | %.3f s | %.3f s | %.3f s | %.3f s | %d |" % (
            s, d["mean_s"], d["min_s"], d.get("m_mean_s", float("nan")), d["import_s"],
            d["modules"]))
    for s in sorted(m["baseline"], key=lambda k: "-I" in k):
        d = m["baseline"][s]
        lines.append("| `%s` (baseline) | %.3f s | %.3f s | | %s | %s |" % (
            s, d["mean_s"], d["min_s"], ("%.3f s" % d["import_s"]) if "import_s" in d else "",
            d.get("modules", "")))
    return "\n".join(lines)


def run_isolated(n=10):
    """run(n) in a private network namespace with only loopback (tests/netns-run):
    the units run on the host, so nothing they try may reach a real address."""
    import json
    p = subprocess.run([os.path.join(REPO, "tests", "netns-run"), sys.executable, os.path.abspath(__file__),
                        "--json", str(n)], stdout=subprocess.PIPE, universal_newlines=True)
    if p.returncode != 0:
        raise RuntimeError("bench/micro.py in its network namespace exited %d" % p.returncode)
    return json.loads(p.stdout)


if __name__ == "__main__":
    import json
    as_json = sys.argv[1:2] == ["--json"]
    args = sys.argv[2:] if as_json else sys.argv[1:]
    r = run(int(args[0]) if args else 5, log=lambda *a: print(*a, file=sys.stderr))
    print(json.dumps(r, indent=1))
    if not as_json:
        print(table(r))

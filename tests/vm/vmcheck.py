#!/usr/bin/env python3
"""make vm-check: the scenario matrix, each scenario a real QEMU boot against the emulator.

usage: vmcheck.py [--deb DEB] [--only 1,2,7a] [--jobs 2] [--workdir DIR]

Builds (or takes from $CACHE_DIR) the Debian 12 test images with our .deb installed and
deprovisioned, boots them two at a time and asserts on what the fabric emulator received,
the pcap of the NIC and the guest's own report (tests/vm/guest/vm-report). Prints a table
(scenario, result, boot -> Ready) and ends with "N passed, M failed". Artifacts of every
boot (serial log, pcap, emulator records, guest report) stay in --workdir
(default build/vm-check).
"""

import argparse
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import sys
import threading
import time
import traceback
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

BOOT_TIMEOUT = int(os.environ.get("VM_BOOT_TIMEOUT", "300"))  # hard limit per boot (s)


# ----------------------------------------------------------------- helpers

def ids_for(name):
    return {"container_id": str(uuid.uuid4()),
            "instance_id": "%s._%s" % (uuid.uuid4(), re.sub(r"[^A-Za-z0-9-]", "x", name)[:40]),
            "incarnation": 1}


health_posts = h.health_posts
accepted_ready = h.accepted_ready


def ws_requests(records):
    return [r for r in records if r.get("service") == "wireserver"]


class Result(object):
    def __init__(self, sid, title):
        self.sid = sid
        self.title = title
        self.failures = []
        self.notes = []
        self.skipped = None
        self.ready_s = None
        self.dhcp_to_ready_s = None
        self.boots = []
        self.error = None

    @property
    def ok(self):
        return not self.failures and not self.error and self.skipped is None

    def check(self, cond, msg):
        if not cond:
            self.failures.append(msg)
        return cond

    def note(self, msg):
        self.notes.append(msg)


class Ctx(object):
    def __init__(self, workdir, images):
        self.workdir = workdir
        self.images = images
        self.lock = threading.Lock()
        # (boot, fabric scenario) of a first boot (1: Debian 12, 13: Debian 13),
        # whose disk the reboot and clone scenarios boot again
        self.first = {"1": None, "13": None}
        self.first_done = {"1": threading.Event(), "13": threading.Event()}


def run_boot(ctx, res, name, scenario, vm_id=None, image=None, overlay=None,
             asset_tag=h.ASSET_TAG, timeout=BOOT_TIMEOUT, **qemu_kw):
    wd = os.path.join(ctx.workdir, name)
    os.makedirs(wd, exist_ok=True)
    vm_id = vm_id or scenario.get("vm_id") or h.new_vm_id()
    image = image or ctx.images["networkd"]
    with h.Fabric(wd, scenario, name="fabric") as fab:
        boot = h.boot(image, wd, "vm", vm_id, fabric=fab, overlay=overlay, asset_tag=asset_tag,
                      timeout=timeout, **qemu_kw)
        records = fab.records()
    boot.records = records
    boot.fabric_t0 = fab.t0_wall
    return _keep(res, wd, boot)


def _keep(res, wd, boot):
    """A finished boot: kept in the result, its guest report in wd/report.json,
    its timing noted."""
    res.boots.append(boot)
    with open(os.path.join(wd, "report.json"), "w") as f:
        json.dump(boot.report, f, indent=1)
    _timing(res, boot)
    return boot


def _timing(res, boot):
    tl = h.timeline(boot, boot.records, boot.fabric_t0)
    boot.timeline = tl
    if tl["boot_to_ready_s"] is not None and res.ready_s is None:
        res.ready_s = tl["boot_to_ready_s"]
        res.dhcp_to_ready_s = tl["dhcp_to_ready_s"]


def guest_ok(res, boot):
    """The boot ended by itself with a guest report; no process left in our units; no
    ordering cycle in its journal."""
    ok = res.check(boot.how == "poweroff" and boot.report is not None,
                   "%s: boot ended by %s without a guest report (serial log %s)"
                   % (os.path.basename(boot.workdir), boot.how,
                      boot.serial_log))
    if ok:
        no_leftovers(res, boot)
        res.check(not boot.report.get("ordering_cycles"),
                  "ordering cycle: %s" % boot.report.get("ordering_cycles"))
    return ok


def no_leftovers(res, boot):
    """After our units finished, none of their cgroups holds a process (e.g. a DHCP
    client restarted from the hostname unit would live on in its cgroup)."""
    procs = boot.report.get("cgroup_procs")
    if not res.check(procs is not None, "guest report has no cgroup_procs"):
        return
    res.check((boot.report.get("cgroup_control") or "").strip() != "",
              "vm-report.service's own cgroup.procs is empty or missing: the cgroup check "
              "looks in the wrong place")
    left = {u: p.split() for u, p in procs.items() if (p or "").strip()}
    res.check(not left, "process(es) left in our units' cgroups: %s\n%s" % (
        left, boot.report.get("cgls", "")[-3000:]))


def retries(boot, units=("report-ready", "hostname", "user")):
    """Journal lines of these units in which a request of ours was retried."""
    journals = (boot.report or {}).get("journals") or {}
    return [line for u in units for line in
            (journals.get("azure-firstboot-%s.service" % u) or "").splitlines()
            if "retrying" in line or "fetching again" in line]


def monotonic_of(line):
    """'[   12.345678] host unit[pid]: ...' (journalctl -o short-monotonic) -> 12.345678"""
    m = re.match(r"\s*\[\s*(\d+\.\d+)\]", line)
    return float(m.group(1)) if m else None


def first_lease_s(boot):
    """Guest monotonic time of networkd's first DHCPv4 lease (journal), or None."""
    for line in ((boot.report or {}).get("journal_networkd") or "").splitlines():
        if "DHCPv4 address" in line:
            return monotonic_of(line)
    return None


def usec(d, key):
    try:
        return int(d.get(key) or 0) / 1e6
    except ValueError:
        return 0.0


def units_succeeded(res, boot, allow_skip=()):
    units = (boot.report or {}).get("units", {})
    for u in h.UNITS:
        d = units.get(u, {})
        short = u.replace("azure-firstboot-", "").replace(".service", "")
        if short in allow_skip and d.get("ConditionResult") == "no":
            res.check(d.get("Result") == "success", "%s: skipped but Result=%s" % (u, d.get("Result")))
            continue
        res.check(d.get("LoadState") == "loaded" and d.get("Result") == "success"
                  and d.get("ActiveState") == "active" and d.get("ExecMainStatus") == "0",
                  "%s: %s/%s Result=%s status=%s" % (u, d.get("ActiveState"), d.get("SubState"),
                                                    d.get("Result"), d.get("ExecMainStatus")))


def kvp_and_console(res, boot, ready, reason=None):
    """Issue 13: the PROVISIONING_REPORT record in the KVP pool (the image carries
    /var/lib/hyperv; QEMU has no KVP daemon), the units' summary lines on the serial
    console, and status readable by an unprivileged user."""
    rep = boot.report or {}
    pool = rep.get("kvp_pool") or {}
    records = [r for r in pool.get("records") or [] if r[0] == "PROVISIONING_REPORT"]
    res.check(pool.get("size", 0) % 2560 == 0 and len(records) == 1,
              "KVP pool: expected one PROVISIONING_REPORT record: %s" % str(pool)[:300])
    if records:
        value = records[0][1]
        fields = value.split("|")
        res.check(records[0][2], "KVP value not zero-padded")
        res.check(len(value.encode("utf-8")) <= 1022, "KVP value longer than 1022 bytes")
        res.check(fields[0] == ("result=success" if ready else "result=error"),
                  "KVP record says %r" % value[:200])
        res.check(any(f.startswith("vm_id=") and f != "vm_id=" for f in fields)
                  and any(f.startswith("timestamp=") for f in fields), "KVP fields: %r" % value[:200])
        if not ready:
            res.check(any(f.startswith("reason=") for f in fields)
                      and fields[-1] == "documentation_url=https://aka.ms/linuxprovisioningerror",
                      "KVP error record: %r" % value[:300])
        res.note("KVP: %s" % value[:140])
    serial = boot.serial()
    line = "Ready reported (incarnation" if ready else "provisioning FAILED: "
    found = [l for l in serial.splitlines() if "azure-firstboot[" in l and line in l]
    res.check(found, "serial console has no summary line %r" % line)
    if found:
        res.note("console: %s" % found[-1].strip()[:140])
    rc = (rep.get("status_rc") or {}).get("rc")
    res.check(rc == (0 if ready else 1), "status as uid 65534 exited %r: %s" % (
        rc, ((rep.get("status_rc") or {}).get("out") or "")[:200]))


def provisioned(res, boot, scen, expect_incarnation=None, dhcp=True):
    """Scenario-1 checks: one Ready with the goal state's ids, hostname, units, DHCP name."""
    if not guest_ok(res, boot):
        return
    name = scen["computer_name"]
    rd = accepted_ready(boot.records)
    res.check(len(rd) == 1, "expected exactly one accepted Ready, got %d" % len(rd))
    if rd:
        r = rd[0]["report"]
        inc = expect_incarnation if expect_incarnation is not None else scen["incarnation"]
        res.check((r["incarnation"], r["container_id"], r["instance_id"]) ==
                  (inc, scen["container_id"], scen["instance_id"]),
                  "Ready carries %s/%s/%s, goal state has %s/%s/%s" % (
                      r["incarnation"], r["container_id"], r["instance_id"], inc,
                      scen["container_id"], scen["instance_id"]))
    rep = boot.report
    res.check(rep["hostname"] == name, "hostname is %r, computerName %r" % (rep["hostname"], name))
    res.check((rep.get("etc_hostname") or "").strip() == name,
              "/etc/hostname is %r" % rep.get("etc_hostname"))
    # set without hostnamectl (sethostname + /etc/hostname): hostnamed sees both names
    for kind in ("static", "transient"):
        res.check(rep.get("hostnamectl_" + kind) == name, "hostnamectl --%s says %r" % (
            kind, rep.get("hostnamectl_" + kind)))
    units_succeeded(res, boot)
    if dhcp:
        pk = [p for p in h.dhcp_packets(boot.pcap) if p["from_client"]
              and p["type"] in ("REQUEST", "DISCOVER", "INFORM")]
        res.check(any(p["hostname"] == name for p in pk),
                  "no DHCP request carried host name %r (seen: %s)" % (
                      name, sorted(set(str(p["hostname"]) for p in pk))))


KEYGEN_UNIT = "azure-firstboot-ssh-keygen.service"


def ssh_up(res, boot, keygen_ran):
    """sshd runs with host keys; azure-firstboot-ssh-keygen.service made them on the first
    boot of the deprovisioned image (keygen_ran) and was skipped on later boots."""
    rep = boot.report or {}
    res.check(rep.get("ssh_active") == "active",
              "ssh.service is %r, not active; its journal:\n%s" % (rep.get("ssh_active"),
                                                                  rep.get("ssh")))
    res.check("/etc/ssh/ssh_host_ed25519_key" in (rep.get("ssh_host_files") or []),
              "no /etc/ssh/ssh_host_ed25519_key (host key files: %s)" % rep.get("ssh_host_files"))
    d = rep.get("ssh_keygen_unit") or {}
    if keygen_ran:
        res.check(d.get("ConditionResult") == "yes" and d.get("Result") == "success"
                  and d.get("ActiveState") == "active" and d.get("ExecMainStatus") == "0",
                  "%s did not run: %s" % (KEYGEN_UNIT, d))
    else:
        # skipped this boot: conditions evaluated (timestamp set) and false
        res.check(d.get("ConditionResult") == "no" and d.get("Result") == "success"
                  and d.get("ConditionTimestampMonotonic") not in (None, "", "0"),
                  "%s not skipped although host keys exist: %s" % (KEYGEN_UNIT, d))
    res.check(not rep.get("ordering_cycles"), "ordering cycle: %s" % rep.get("ordering_cycles"))


# ----------------------------------------------------------------- scenarios

def scen(name, **kw):
    s = {"vm_id": h.new_vm_id(), "computer_name": name}
    s.update(ids_for(name))
    s.update(kw)
    return s


def s1_first_boot(ctx, res, sid="1", image="networkd", name="1-first-boot"):
    done = ctx.first_done.get(sid) or threading.Event()
    if image not in ctx.images:
        done.set()
        res.skipped = "no %s image: %s" % (image, ctx.images_error.get(image))
        return
    sc = scen("vmcheck-first" if sid == "1" else "vmcheck-first-%s" % sid)
    try:
        boot = run_boot(ctx, res, name, sc, image=ctx.images[image])
        provisioned(res, boot, sc)
        # the image was deprovisioned with --ssh-host-keys
        if boot.report:
            ssh_up(res, boot, keygen_ran=True)
        # our own DHCP restart (host name publishing) must not fail a request of ours
        res.check(not retries(boot), "a request was retried: %s" % retries(boot)[:3])
        st = (boot.report or {}).get("status_json", {})
        res.check('"provisioned": true' in (st.get("out") or ""),
                  "azure-firstboot status --json does not say provisioned: %s" % st)
        if boot.report:
            kvp_and_console(res, boot, ready=True)
        failed = (boot.report or {}).get("failed_units") or ""
        if failed.strip():
            res.note("failed units (not ours): %s" % ", ".join(
                l.split()[0] for l in failed.splitlines() if l.strip()))
        if res.ok:
            ctx.first[sid] = (boot, sc)
    finally:
        done.set()


def _need_s1(ctx, res, sid="1"):
    ctx.first_done[sid].wait()
    if ctx.first[sid] is None:
        res.skipped = "scenario %s failed; its disk is what this scenario boots again" % sid
        return None
    return ctx.first[sid]


def s2_reboot(ctx, res, sid="1", image="networkd", name="2-reboot"):
    s1 = _need_s1(ctx, res, sid)
    if not s1:
        return
    boot1, sc1 = s1
    ov = h.copy_overlay(boot1.overlay, os.path.join(ctx.workdir, name + ".qcow2"))
    sc = dict(sc1)
    boot = run_boot(ctx, res, name, sc, vm_id=sc1["vm_id"], overlay=ov,
                    image=ctx.images[image])
    if not guest_ok(res, boot):
        return
    ws = ws_requests(boot.records)
    res.check(len(ws) == 0, "%d WireServer request(s) on an already-provisioned reboot: %s" % (
        len(ws), [r["path"] for r in ws][:5]))
    imds = [r for r in boot.records if r.get("service") == "imds"]
    res.note("IMDS requests on reboot: %d" % len(imds))
    res.check(boot.report["hostname"] == sc1["computer_name"],
              "hostname not kept: %r" % boot.report["hostname"])
    units_succeeded(res, boot, allow_skip=("network-wait", "hostname", "user", "report-ready"))
    ssh_up(res, boot, keygen_ran=False)
    skipped = [u for u, d in boot.report["units"].items() if d.get("ConditionResult") == "no"]
    # azure-firstboot-generator saw the marker: not one of our units started a process
    res.check(all(u in skipped for u in h.UNITS), "not all units skipped on reboot: %s" % skipped)
    res.note("skipped: %s" % ", ".join(sorted(u.split("-", 2)[-1].split(".")[0]
                                              for u in skipped)))
    res.note("our units took %.2f s" % sum(boot.timeline["units_s"].values()))


def s3_clone(ctx, res, sid="1", image="networkd", name="3-clone"):
    s1 = _need_s1(ctx, res, sid)
    if not s1:
        return
    boot1, sc1 = s1
    ov = h.copy_overlay(boot1.overlay, os.path.join(ctx.workdir, name + ".qcow2"))
    sc = scen("vmcheck-clone" if sid == "1" else "vmcheck-clone-%s" % sid)
    boot = run_boot(ctx, res, name, sc, overlay=ov, image=ctx.images[image])
    provisioned(res, boot, sc)
    # a clone keeps the disk's host keys: nothing to generate
    if boot.report:
        ssh_up(res, boot, keygen_ran=False)


def s4_ws_refuse_then_503(ctx, res):
    busy = [[503, {"Retry-After": "5"}], [503, {"Retry-After": "5"}]]
    sc = scen("vmcheck-refuse", ws_refuse_for=60, goalstate_statuses=busy,
              health_statuses=[[503, {"Retry-After": "5"}]])
    boot = run_boot(ctx, res, "4-ws-refuse-503", sc)
    provisioned(res, boot, sc, dhcp=False)
    n503 = [r for r in boot.records if r.get("service") == "wireserver" and r.get("status") == 503]
    res.check(len(n503) == 3, "expected the 3 scripted 503s to be served, got %d" % len(n503))
    first = min([r["t"] for r in ws_requests(boot.records)] or [0])
    res.check(first >= 60, "first WireServer request at %.1f s, while refusing for 60 s" % first)


def s5_incarnation_bump(ctx, res):
    sc = scen("vmcheck-bump", bump_incarnation_on_health=1)
    boot = run_boot(ctx, res, "5-incarnation-bump", sc)
    provisioned(res, boot, sc, expect_incarnation=2, dhcp=False)
    gone = [p for p in health_posts(boot.records) if p["status"] == 410]
    res.check(len(gone) == 1, "expected one 410 for the stale incarnation, got %d" % len(gone))


def s6_imds_gone(ctx, res):
    sc = scen("vmcheck-imds410", imds_gone_for=70)
    boot = run_boot(ctx, res, "6-imds-gone-70s", sc)
    provisioned(res, boot, sc, dhcp=False)
    rd = accepted_ready(boot.records)
    if rd:
        res.check(rd[0]["t"] >= 70, "Ready at %.1f s, before IMDS answered (70 s)" % rd[0]["t"])
    g = [r for r in boot.records if r.get("service") == "imds" and r.get("status") == 410]
    res.check(len(g) >= 1, "IMDS never answered 410 (no request in the first 70 s?)")


def _hostile(ctx, res, sid, name):
    sc = scen(name)
    sc["instance_id"] = "%s._vmcheck-hostile" % uuid.uuid4()
    boot = run_boot(ctx, res, sid, sc)
    if not guest_ok(res, boot):
        return
    posts = health_posts(boot.records)
    failed = [p for p in posts if p["status"] == 200 and p["report"]
              and p["report"]["state"] == "NotReady"
              and p["report"]["substatus"] == "ProvisioningFailed"]
    res.check(len(failed) >= 1, "no accepted ProvisioningFailed report (health POSTs: %s)" % [
        (p["status"], p["report"] and p["report"]["state"]) for p in posts])
    if failed:
        d = failed[-1]["report"].get("description") or ""
        res.check(d.strip() != "", "ProvisioningFailed without a reason")
        res.note("reason: %s" % d[:160])
    res.check(not accepted_ready(boot.records), "Ready reported for a hostile name")
    rep = boot.report
    kvp_and_console(res, boot, ready=False)
    res.check(rep["hostname"] != name and (rep.get("etc_hostname") or "").strip() != name,
              "hostname changed to the hostile name")
    res.check(rep["hostname"] == ctx.deprovisioned_hostname,
              "hostname %r, expected the image's unchanged %r" % (
                  rep["hostname"], ctx.deprovisioned_hostname))
    res.check(not rep.get("pwned"), "evidence of execution: %s" % rep.get("pwned"))
    res.note("units: %s" % ", ".join("%s=%s" % (u.split("-", 2)[-1].split(".")[0],
                                               d.get("Result"))
                                    for u, d in sorted(rep["units"].items())))


def s7a(ctx, res):
    _hostile(ctx, res, "7a-hostile-subst", "$(touch /pwned-subst)$(reboot)")


def s7b(ctx, res):
    _hostile(ctx, res, "7b-hostile-underscore", "a_b")


def s7c(ctx, res):
    _hostile(ctx, res, "7c-hostile-300", "a" * 300)


def s8_not_azure(ctx, res):
    sc = scen("vmcheck-notazure")
    boot = run_boot(ctx, res, "8-not-azure", sc, asset_tag=None)
    if not guest_ok(res, boot):
        return
    res.check(len(boot.records) == 0, "%d request(s) sent although not on Azure: %s" % (
        len(boot.records), [(r["service"], r["path"]) for r in boot.records][:5]))
    units_succeeded(res, boot, allow_skip=("network-wait", "hostname", "user", "report-ready"))
    res.check(boot.report["hostname"] == ctx.deprovisioned_hostname,
              "hostname changed to %r" % boot.report["hostname"])
    # azure-firstboot-generator read the asset tag: no unit of ours started a process
    skipped = [u for u, d in boot.report["units"].items() if d.get("ConditionResult") == "no"]
    res.check(all(u in skipped for u in h.UNITS), "not all units skipped off Azure: %s" % skipped)
    res.check("/run/azure-firstboot/not-azure" in (boot.report.get("run_files") or {}),
              "no /run/azure-firstboot/not-azure: %s" % sorted(boot.report.get("run_files") or {}))


NS_SUBNET = "10.99.0"
NS_WIRESERVER = NS_SUBNET + ".2"  # the non-default WireServer announced by option 245


def s9_ifupdown_option245(ctx, res, image="ifupdown", name="9-ifupdown-opt245"):
    if image not in ctx.images:
        res.skipped = "no %s image: %s" % (image, ctx.images_error.get(image))
        return
    why = netns_unavailable()
    if why:
        res.skipped = why
        return
    sc = scen("vmcheck-opt245" if image == "ifupdown" else "vmcheck-opt245-" + image)
    wd = os.path.join(ctx.workdir, name)
    os.makedirs(wd, exist_ok=True)
    ns = h.Netns(wd, subnet=NS_SUBNET, dhcp_options=["245,%s" % NS_WIRESERVER],
                 extra_addrs=[NS_WIRESERVER, h.IMDS_IP])
    try:
        ns.start()
    except Exception as e:  # the environment cannot do it: not the agent's fault
        res.skipped = "network namespace/tap/dnsmasq setup failed: %s" % str(e).splitlines()[0]
        return
    with ns:
        with h.Fabric(wd, sc, name="fabric", netns=ns.name,
                      wireserver=NS_WIRESERVER + ":80", imds=h.IMDS_IP + ":80") as fab:
            boot = h.boot(ctx.images[image], wd, "vm", sc["vm_id"], fabric=fab,
                          netns=ns.name, tap=ns.tap, timeout=BOOT_TIMEOUT)
            boot.records = fab.records()
            boot.fabric_t0 = fab.t0_wall
    _keep(res, wd, boot)
    provisioned(res, boot, sc)
    if boot.report:
        if image == "ifupdown":
            lease = "\n".join(v or "" for v in boot.report.get("leases", {}).values())
            res.check("unknown-245" in lease, "dhclient lease has no option 245")
            dhcp_client_in_ifupdown_unit(res, boot)
        else:  # NetworkManager: its internal client's lease file has no option 245
            res.check("private_245" in (boot.report.get("nmcli") or ""),
                      "nmcli shows no private_245: %s" % (boot.report.get("nmcli") or "")[:500])
            res.check("DHCP option 245 (NetworkManager)" in (boot.report.get("journal") or ""),
                      "network-wait did not take option 245 from NetworkManager")
        st = boot.report.get("status_json", {}).get("out") or ""
        res.check(NS_WIRESERVER in st, "status --json does not name %s: %s" % (
            NS_WIRESERVER, st[:300]))


def cgls_processes(text):
    """systemd-cgls output -> [(unit, "PID command line")]."""
    out, unit = [], None
    for line in text.splitlines():
        item = line.lstrip("\u2502\u251c\u2514\u2500 |`-")
        m = re.match(r"^(\S+\.(service|scope))( |$)", item)
        if m:
            unit = m.group(1)
        elif re.match(r"^\d+ ", item):
            out.append((unit, item))
    return out


def dhcp_client_in_ifupdown_unit(res, boot):
    """The restarted dhclient runs in ifupdown's own unit, with ifupdown's arguments."""
    cgls = boot.report.get("cgls") or ""
    dh = [(u, p) for u, p in cgls_processes(cgls) if p.split()[1:2] == ["dhclient"]
          or p.split()[1:2] == ["/sbin/dhclient"]]
    res.check(any(u in ("networking.service", "ifup@eth0.service") for u, _ in dh),
              "no dhclient in ifupdown's units: %s" % (dh or cgls[-2000:]))
    journal = boot.report.get("journal") or ""
    res.check("ifupdown restart of networking.service" in journal
              or "ifupdown restart of ifup@eth0.service" in journal,
              "the hostname unit did not hand the DHCP restart to ifupdown")


DHCP_LATE_S = 20  # dnsmasq starts this long after QEMU


def s17_dhcp_late(ctx, res):
    """networkd image on a tap whose DHCP server starts 20 s after boot: network-wait
    (part of network-online.target) waits, network-online.target is reached only after
    the lease, Ready is reported once."""
    why = netns_unavailable()
    if why:
        res.skipped = why
        return
    sc = scen("vmcheck-dhcp-late")
    name = "17-dhcp-late"
    wd = os.path.join(ctx.workdir, name)
    os.makedirs(wd, exist_ok=True)
    ns = h.Netns(wd, subnet="10.98.0", extra_addrs=[h.WIRESERVER_IP, h.IMDS_IP])
    try:
        ns.start(dhcp=False)
    except Exception as e:  # the environment cannot do it: not the agent's fault
        res.skipped = "network namespace/tap setup failed: %s" % str(e).splitlines()[0]
        return
    late = {}

    def dhcp_on():
        try:
            ns.start_dhcp()
        except Exception as e:
            late["error"] = str(e)

    with ns:
        with h.Fabric(wd, sc, name="fabric", netns=ns.name,
                      wireserver=h.WIRESERVER_IP + ":80", imds=h.IMDS_IP + ":80") as fab:
            timer = threading.Timer(DHCP_LATE_S, dhcp_on)
            timer.start()
            try:
                boot = h.boot(ctx.images["networkd"], wd, "vm", sc["vm_id"], fabric=fab,
                              netns=ns.name, tap=ns.tap, timeout=BOOT_TIMEOUT)
            finally:
                timer.cancel()
            boot.records = fab.records()
            boot.fabric_t0 = fab.t0_wall
    _keep(res, wd, boot)
    if not res.check("error" not in late, "dnsmasq did not start: %s" % late.get("error")):
        return
    provisioned(res, boot, sc)
    if not boot.report:
        return
    res.check(ns.dhcp_started is not None and ns.dhcp_started - boot.t_start >= DHCP_LATE_S - 1,
              "dnsmasq started %.1f s after QEMU" % ((ns.dhcp_started or 0) - boot.t_start))
    lease = first_lease_s(boot)
    wait = boot.report["units"].get("azure-firstboot-network-wait.service", {})
    online = (boot.report.get("targets") or {}).get("network-online.target", {})
    started, done = usec(wait, "ExecMainStartTimestampMonotonic"), usec(wait, "ActiveEnterTimestampMonotonic")
    reached = usec(online, "ActiveEnterTimestampMonotonic")
    if res.check(lease is not None, "no DHCPv4 lease in networkd's journal"):
        res.check(0 < started < lease, "network-wait started at %.1f s, not before the lease (%.1f s)"
                  % (started, lease))
        res.check(reached >= done >= lease, "network-online.target reached at %.1f s, network-wait "
                  "done at %.1f s, lease at %.1f s" % (reached, done, lease))
        res.note("guest: network-wait started %.1f s, lease %.1f s, network-wait done +%.2f s, "
                 "network-online +%.2f s" % (started, lease, done - lease, reached - lease))
    res.check(not retries(boot), "a request was retried: %s" % retries(boot)[:3])


OVMF = "/usr/share/ovmf/OVMF.fd"


def s10_vmtest_bios_image(ctx, res, key="grub", name="10-vm-test", firmware=None,
                          computer_name="vmtest-bios"):
    """make vm-test on an image-builder-style disk: MBR + GRUB, no test instrumentation,
    booted through the BIOS (or GPT + ESP + GRUB's EFI image through OVMF: 16); first
    boot, then a reboot of the same disk and VM id."""
    import vmtest
    if key not in ctx.images:
        res.skipped = "no %s image: %s" % (key, ctx.images_error.get(key))
        return
    if firmware and not os.path.exists(firmware):
        res.skipped = "%s missing (Debian package ovmf, see .ci/apt-packages)" % firmware
        return
    wd = os.path.join(ctx.workdir, name)
    args = argparse.Namespace(
        image=ctx.images[key].disk, kernel=None, initrd=None, append=None,
        computer_name=computer_name, vm_id=None, scenario=None, reboot=True,
        no_asset_tag=False, timeout=BOOT_TIMEOUT, settle=5, reboot_wait=45,
        disk_if="virtio", firmware=firmware, mem=1024, workdir=wd)
    r = vmtest.run(args, quiet=True)
    res.failures += r.failures
    res.notes += r.notes
    res.ready_s = r.ready_s
    res.dhcp_to_ready_s = r.dhcp_to_ready_s
    if not r.ok:
        res.failures.append("make vm-test failed, see %s/vm-test.txt" % wd)
        res.boots += r.boots


def s11_nm_first_boot(ctx, res):
    s1_first_boot(ctx, res, sid="11", image="nm", name="11-nm-first-boot")
    boot = res.boots[-1] if res.boots else None
    if boot and boot.report:
        journal = boot.report.get("journal") or ""
        res.check(re.search(r"NetworkManager DHCP restart \(applied ipv4\.dhcp-hostname\) "
                            r"of eth0(;|$)", journal, re.M) is not None,
                  "the hostname unit did not restart NetworkManager's DHCP on eth0 (and only "
                  "there: not lo)")


def s12_nm_option245(ctx, res):
    s9_ifupdown_option245(ctx, res, image="nm", name="12-nm-opt245")


def s13_trixie_first(ctx, res):
    s1_first_boot(ctx, res, sid="13", image="trixie", name="13-trixie-first-boot")


def s14_trixie_reboot(ctx, res):
    s2_reboot(ctx, res, sid="13", image="trixie", name="14-trixie-reboot")


def s15_trixie_clone(ctx, res):
    s3_clone(ctx, res, sid="13", image="trixie", name="15-trixie-clone")


def s16_vmtest_uefi_image(ctx, res):
    s10_vmtest_bios_image(ctx, res, key="efi", name="16-vm-test-uefi", firmware=OVMF,
                          computer_name="vmtest-uefi")


# ------------------------------------------------------------ the admin user (issue 9)

TEST_KEY = os.path.join(h.HERE, "test_id_ed25519")  # test-only key pair (see its .NOTE)
ADMIN_COMMENT = "azure-firstboot admin user"
HOLD = 200  # seconds vm-report keeps the guest up for the SSH checks (vmreport.hold)
# lets vm-report power the guest off 2 s later (the ssh session ends first)
RELEASE = "systemd-run --quiet --on-active=2 /usr/bin/touch /run/vm-report.release"


def ssh(port, user, command, key=None, password=None, stdin=None, workdir=None, timeout=60):
    """One ssh to 127.0.0.1:port (QEMU hostfwd to the guest's port 22): with the
    test key, or with a password given through SSH_ASKPASS (no sshpass needed)."""
    import subprocess

    argv = ["ssh", "-F", "/dev/null", "-p", str(port), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"]
    env = dict(os.environ)
    if key == "none":  # only ask which methods the server offers ("Permission denied (...)")
        argv += ["-o", "PreferredAuthentications=none", "-o", "BatchMode=yes"]
    elif key:
        argv += ["-i", key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                 "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no"]
    else:
        askpass = os.path.join(workdir, "askpass.sh")
        with open(askpass, "w") as f:
            f.write('#!/bin/sh\nprintf "%s\\n" "$VMCHECK_PASSWORD"\n')
        os.chmod(askpass, 0o700)
        argv += ["-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password",
                 "-o", "NumberOfPasswordPrompts=1"]
        env.update(SSH_ASKPASS=askpass, SSH_ASKPASS_REQUIRE="force", DISPLAY=":0",
                   VMCHECK_PASSWORD=password)
    argv += ["%s@127.0.0.1" % user, command]
    try:
        p = subprocess.run(argv, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "ssh timed out"
    return p.returncode, p.stdout.decode("utf-8", "replace")


class SshProbe(object):
    """Logs in (retrying while the guest boots) from a thread while h.boot() runs."""

    def __init__(self, port, user, command, timeout=None, **kw):
        self.args = (port, user, command)
        self.timeout = timeout or BOOT_TIMEOUT
        self.kw = kw
        self.result = (None, "never connected")
        self.attempts = 0
        self.methods = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        deadline = time.time() + self.timeout
        while time.time() < deadline and not self.stop.is_set():
            self.attempts += 1
            rc, out = ssh(*self.args, **self.kw)
            self.result = (rc, out)
            if rc == 0:
                break
            self.stop.wait(3)
        # the authentication methods the running sshd offers now (after the user step)
        for _ in range(5):
            if self.result[0] != 0 or self.stop.is_set():
                return
            rc, out = ssh(self.args[0], self.args[1], "true", key="none")
            self.methods = out.strip()
            if "Permission denied (" in out:
                return
            self.stop.wait(2)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        self.thread.join(90)


def _key_copy(wd):
    os.makedirs(wd, exist_ok=True)
    key = os.path.join(wd, "id_ed25519")
    shutil.copyfile(TEST_KEY, key)
    os.chmod(key, 0o600)  # ssh refuses a private key others can read
    return key


def _admin_line(boot, name):
    for line in ((boot.report or {}).get("passwd") or "").splitlines():
        if line.split(":")[0] == name:
            return line
    return None


def su1_ssh_key_sudo(ctx, res):
    """IMDS serves an admin user + the test key: log in with the private key, sudo -n."""
    name = "vmadmin"
    sc = scen("vmcheck-ssh", admin_username=name)
    wd = os.path.join(ctx.workdir, "u1-ssh-key")
    key = _key_copy(wd)
    port = h.free_port()
    cmd = "id -un; sudo -n true && echo SUDO-OK; sudo -n " + RELEASE
    img = ctx.images["keys"]  # sshd runs before the user step (host keys kept)
    with SshProbe(port, name, cmd, key=key) as probe:
        boot = run_boot(ctx, res, "u1-ssh-key", sc, hostfwd=port, image=img,
                        append=img.append + " vmreport.hold=%d" % HOLD)
    provisioned(res, boot, sc, dhcp=False)
    # the hostname step's DHCP restart runs while this step fetches IMDS: no request
    # of ours may fail because of it (the republish lock)
    res.check(not retries(boot), "a request was retried: %s" % retries(boot)[:3])
    rc, out = probe.result
    res.check(rc == 0 and out.split()[:1] == [name] and "SUDO-OK" in out,
              "ssh -i test key %s@ (hostfwd) + sudo -n true: rc=%s after %d attempt(s): %s" % (
                  name, rc, probe.attempts, out.strip()[-300:]))
    res.note("ssh+sudo ok after %d attempt(s)" % probe.attempts if rc == 0 else "ssh failed")
    rep = boot.report or {}
    line = _admin_line(boot, name) or ""
    res.check(ADMIN_COMMENT in line, "no %s account made by the agent: %r" % (name, line))
    res.check(rep.get("shadow_kinds", {}).get(name) == "*",
              "password field of %s is %r, expected '*' (no password, not locked)" % (
                  name, rep.get("shadow_kinds", {}).get(name)))
    sudo = (rep.get("sudoers_d") or {}).get("/etc/sudoers.d/azure-firstboot") or ""
    res.check("%s ALL=(ALL:ALL) NOPASSWD: ALL" % name in sudo, "sudoers: %r" % sudo)
    res.check("passwordauthentication no" in (rep.get("sshd_T") or ""),
              "sshd -T does not say passwordauthentication no")
    journal = rep.get("journal") or ""
    res.check(re.search(r"sshd \(PID [0-9]+\) reloaded", journal) is not None,
              "the user step did not signal the running sshd: %r" % [
                  l for l in journal.splitlines() if "sshd:" in l][-1:])
    # the running sshd applies it (the user step reloaded it): Debian's default would
    # offer "publickey,password"
    res.check((probe.methods or "").endswith("Permission denied (publickey)."),
              "the running sshd offers other methods than publickey (not reloaded?): %r" % probe.methods)


def sse1_selinux_enforcing(ctx, res):
    """Debian 12 with SELinux enforcing (the reference policy, the image labelled at
    build time): log in with the key; ~/.ssh and authorized_keys carry ssh_home_t."""
    name = "vmadmin"
    sc = scen("vmcheck-selinux", admin_username=name)
    wd = os.path.join(ctx.workdir, "se1-selinux")
    key = _key_copy(wd)
    port = h.free_port()
    cmd = ("id -un; echo enforce=$(cat /sys/fs/selinux/enforce); ls -Zd ~/.ssh ~/.ssh/authorized_keys; "
           "sudo -n " + RELEASE)
    img = ctx.images.get("selinux")
    if img is None:
        res.check(False, "no SELinux image: %s" % ctx.images_error.get("selinux"))
        return
    # loading the policy and an enforcing boot take longer under TCG: twice the time
    with SshProbe(port, name, cmd, key=key, timeout=2 * BOOT_TIMEOUT) as probe:
        boot = run_boot(ctx, res, "se1-selinux", sc, hostfwd=port, image=img, timeout=2 * BOOT_TIMEOUT,
                        append="%s %s vmreport.hold=%d" % (img.append, h.SELINUX_APPEND, HOLD))
    if not guest_ok(res, boot):
        return
    # provisioned() without hostnamectl: Debian's policy runs services without a policy
    # of their own (ours, vm-report) in initrc_t, and D-Bus replies from hostnamed and
    # networkd to initrc_t are denied (hostnamectl times out; so does the hostname
    # step's networkctl reconfigure, which the step reports as a warning)
    res.check(len(accepted_ready(boot.records)) == 1, "expected exactly one accepted Ready")
    rep = boot.report
    res.check(rep["hostname"] == sc["computer_name"] and (rep.get("etc_hostname") or "").strip() ==
              sc["computer_name"], "hostname %r, /etc/hostname %r" % (rep["hostname"], rep.get("etc_hostname")))
    units_succeeded(res, boot)
    rc, out = probe.result
    res.check(rc == 0 and out.split()[:1] == [name],
              "ssh -i test key %s@ (hostfwd): rc=%s after %d attempt(s): %s" % (
                  name, rc, probe.attempts, out.strip()[-400:]))
    res.check("enforce=1" in out, "SELinux is not enforcing in the guest: %r" % out.strip()[-400:])
    labels = [line for line in out.splitlines() if "/.ssh" in line]
    # the whole context of the policy's home template (file_contexts.homedirs), as
    # restorecon -F sets it; a file merely created by the unit would be system_u:...
    res.check(len(labels) == 2 and all(line.startswith("unconfined_u:object_r:ssh_home_t:")
                                       for line in labels), "labels: %r" % labels)
    res.note("ls -Z: %s" % "; ".join(" ".join(line.split()[:2]) for line in labels))
    journal = rep.get("journal") or ""
    res.check("SELinux enforcing: relabelled /home/%s/.ssh" % name in journal,
              "the user step did not say it relabelled ~/.ssh")
    # the kernel's AVC lines reach the console: ours, if any, are noted
    ours = [line for line in boot.serial().splitlines()
            if "avc:  denied" in line and 'comm="azure-firstboot"' in line]
    if ours:
        res.note("%d AVC denials for the agent, e.g. %s" % (len(ours), ours[0][-160:]))


def su2_hostile_user(ctx, res):
    """A hostile admin user name: ProvisioningFailed 'user: ...', no account, nothing run."""
    name = "$(touch /pwned-user)"
    sc = scen("vmcheck-baduser", admin_username=name)
    boot = run_boot(ctx, res, "u2-hostile-user", sc)
    if not guest_ok(res, boot):
        return
    failed = [p for p in health_posts(boot.records) if p["status"] == 200 and p["report"]
              and p["report"]["substatus"] == "ProvisioningFailed"]
    res.check(len(failed) == 1, "expected one accepted ProvisioningFailed, got %d" % len(failed))
    if failed:
        d = failed[-1]["report"].get("description") or ""
        res.check("|reason=user: " in d and "other than letters" in d, "reason: %r" % d)
        res.note("reason: %s" % d[:120])
    res.check(not accepted_ready(boot.records), "Ready reported for a hostile user name")
    rep = boot.report
    res.check(ADMIN_COMMENT not in (rep.get("passwd") or ""), "an account was created")
    res.check(not rep.get("pwned"), "evidence of execution: %s" % rep.get("pwned"))
    u = rep["units"].get("azure-firstboot-user.service", {})
    res.check(u.get("Result") == "exit-code", "user unit Result=%s" % u.get("Result"))
    res.check(rep["hostname"] == sc["computer_name"], "hostname step did not run alongside")


OVF_ENV = """<?xml version="1.0" encoding="utf-8"?>
<ns0:Environment xmlns="http://schemas.dmtf.org/ovf/environment/1"
 xmlns:ns0="http://schemas.dmtf.org/ovf/environment/1" xmlns:ns1="http://schemas.microsoft.com/windowsazure"
 xmlns:i="http://www.w3.org/2001/XMLSchema-instance">
<ns1:ProvisioningSection><ns1:Version>1.0</ns1:Version>
<ns1:LinuxProvisioningConfigurationSet>
<ns1:ConfigurationSetType>LinuxProvisioningConfiguration</ns1:ConfigurationSetType>
<ns1:HostName>%(host)s</ns1:HostName><ns1:UserName>%(user)s</ns1:UserName>
<ns1:UserPassword>%(password)s</ns1:UserPassword>
<ns1:DisableSshPasswordAuthentication>false</ns1:DisableSshPasswordAuthentication>
</ns1:LinuxProvisioningConfigurationSet></ns1:ProvisioningSection>
<ns1:PlatformSettingsSection><ns1:Version>1.0</ns1:Version><ns1:PlatformSettings>
<ns1:ProvisionGuestAgent>false</ns1:ProvisionGuestAgent></ns1:PlatformSettings>
</ns1:PlatformSettingsSection></ns0:Environment>
"""


def _bytes_in_file(path, needle):
    """Offsets of needle in a (large) file, read in chunks."""
    found = []
    with open(path, "rb") as f:
        pos, tail = 0, b""
        while True:
            chunk = f.read(8 << 20)
            if not chunk:
                return found
            data = tail + chunk
            i = data.find(needle)
            while i >= 0:
                found.append(pos - len(tail) + i)
                i = data.find(needle, i + 1)
            tail = data[-(len(needle) - 1):]
            pos += len(chunk)


def su3_password_udf(ctx, res):
    """disablePasswordAuthentication false, no key: the password comes from ovf-env.xml on
    a UDF medium; password login over SSH works and the password is nowhere on the disk."""
    name = "vmpass"
    password = "Vm-%s!" % uuid.uuid4().hex[:20]
    sc = scen("vmcheck-password", admin_username=name, disable_password_authentication="false",
              public_keys=[])
    wd = os.path.join(ctx.workdir, "u3-password-udf")
    os.makedirs(wd, exist_ok=True)
    try:
        medium = h.udf_medium(os.path.join(wd, "ovf-env.udf"), {"ovf-env.xml": (OVF_ENV % {
            "host": sc["computer_name"], "user": name, "password": password}).encode()})
    except RuntimeError as e:
        res.skipped = "cannot build the UDF medium: %s" % str(e).splitlines()[0]
        return
    port = h.free_port()
    cmd = "id -un; sudo -n true 2>/dev/null && echo NOPASSWD; sudo -S -p '' %s && echo RELEASED" % RELEASE
    img = ctx.images["networkd"]
    with SshProbe(port, name, cmd, password=password, stdin=(password + "\n").encode(),
                  workdir=wd) as probe:
        boot = run_boot(ctx, res, "u3-password-udf", sc, hostfwd=port, cdrom=medium,
                        append=img.append + " vmreport.hold=%d" % HOLD)
    provisioned(res, boot, sc, dhcp=False)
    rc, out = probe.result
    res.check(rc == 0 and out.split()[:1] == [name] and "RELEASED" in out,
              "password login %s@ (hostfwd) + sudo -S: rc=%s after %d attempt(s): %s" % (
                  name, rc, probe.attempts, out.replace(password, "<pw>").strip()[-300:]))
    res.check("NOPASSWD" not in out, "sudo -n worked without a password for a password user")
    rep = boot.report or {}
    res.check(rep.get("shadow_kinds", {}).get(name, "").startswith("$"),
              "no password hash for %s: %r" % (name, rep.get("shadow_kinds", {}).get(name)))
    res.check("passwordauthentication yes" in (rep.get("sshd_T") or ""),
              "sshd -T does not say passwordauthentication yes")
    sudo = (rep.get("sudoers_d") or {}).get("/etc/sudoers.d/azure-firstboot") or ""
    res.check("%s ALL=(ALL:ALL) ALL" % name in sudo, "sudoers: %r" % sudo)
    res.check("/run/azure-firstboot/media" not in (rep.get("mountinfo") or "")
              and " udf " not in (rep.get("mountinfo") or "")
              and " iso9660 " not in (rep.get("mountinfo") or ""), "a medium was mounted")
    # ejected before Ready: QEMU's tray of cd0 closed before, open when Ready arrived;
    # the user unit (ordered before report-ready) logged the eject
    tray = getattr(boot, "tray", None) or {}
    res.check((tray.get("first") or {}).get("tray_open") is False,
              "tray at the start: %r" % tray.get("first"))
    res.check(tray.get("open_before_ready") is True, "the tray was not seen open before Ready")
    at_ready = tray.get("at_ready") or {}
    res.check(at_ready.get("tray_open") is True or at_ready.get("inserted") is False,
              "the medium was not ejected when Ready arrived: %r" % tray.get("at_ready"))
    res.check("provisioning medium: ejected /dev/sr0" in json.dumps(rep),
              "the user unit did not log the eject")
    res.note("tray closed at the start, open before Ready")
    # the password string must be nowhere: not in the guest's disk (the overlay holds every
    # block the guest wrote), not in anything the guest reported (journal included)
    needle = password.encode()
    res.check(needle not in json.dumps(rep).encode(), "the password is in the guest report/journal")
    hits = _bytes_in_file(boot.overlay, needle)
    res.check(not hits, "the password is on the guest's disk (overlay offsets %s)" % hits[:5])
    res.check(_bytes_in_file(medium, needle), "self-check: the password is not on the medium")
    res.note("password login ok; disk scanned (%d MB), password not found" % (
        os.path.getsize(boot.overlay) >> 20))


# ----------------------------------------------------------------- resource disk (issue 19)

RD_UNIT = "azure-firstboot-resource-disk.service"
RD_SWAP = 64 << 20
# QEMU has no VMBus: the "rd" image names the resource disk in its configuration (a
# virtio-scsi disk with Azure's vendor/model strings is the guest's only SCSI disk)
RD_CONF = "[resource_disk]\ndevice = /dev/sda\nswap_size = 64M\n"


def _rd_config(root, lf):
    path = os.path.join(root, "etc/azure-firstboot/azure-firstboot.conf")
    with open(path, "a") as f:
        f.write("\n" + RD_CONF)


def _rd_disk(path, files=("DATALOSS_WARNING_README.txt",), size=256 << 20):
    """A resource disk as Azure hands it over: an MBR with one NTFS partition (type 7)
    from 1 MiB, made by ntfs-3g's mkntfs, holding ``files`` in its root."""
    part = path + ".part"
    with open(part, "wb") as f:
        f.truncate(size - (1 << 20))
    env = dict(os.environ, PATH=h.SYSPATH + ":" + os.environ.get("PATH", ""))
    h._run(["mkntfs", "-F", "-Q", "-q", "-p", "2048", "-L", "Temporary Storage", part], env=env)
    src = path + ".warning"
    with open(src, "w") as f:
        f.write("WARNING: THIS IS A TEMPORARY DISK.\n")
    for name in files:
        h._run(["ntfscp", "-f", part, src, "/" + name], env=env)
    sectors = (size >> 9) - 2048
    entry = bytes([0, 0, 0, 0, 0x07, 0, 0, 0]) + (2048).to_bytes(4, "little") + sectors.to_bytes(4, "little")
    mbr = bytearray(512)
    mbr[440:444] = os.urandom(4)
    mbr[446:462] = entry
    mbr[510:512] = b"\x55\xaa"
    with open(path, "wb") as out, open(part, "rb") as inp:
        out.write(bytes(mbr) + bytes((1 << 20) - 512))
        shutil.copyfileobj(inp, out, 1 << 20)
    os.unlink(part)
    os.unlink(src)
    return path


def _rd_qemu(disk):
    return ["-device", "virtio-scsi-pci,id=scsi0",
            "-drive", "file=%s,if=none,id=rd0,format=raw,cache=unsafe" % disk,
            "-device", "scsi-hd,drive=rd0,bus=scsi0.0,channel=0,scsi-id=0,lun=0,"
                       "vendor=Msft,product=Virtual Disk"]


def _rd_state(rep):
    """(file system, UUID, mount point) of /dev/sda1 from the guest's lsblk."""
    for line in (rep.get("lsblk") or "").splitlines():
        fields = dict(re.findall(r'(\w+)="([^"]*)"', line))
        if fields.get("NAME") == "sda1":
            return fields.get("FSTYPE"), fields.get("UUID"), fields.get("MOUNTPOINT")
    return None, None, None


def _rd_unit_ok(res, boot, label):
    d = (boot.report or {}).get("resource_disk_unit") or {}
    res.check(d.get("Result") == "success" and d.get("ActiveState") == "active"
              and d.get("ExecMainStatus") == "0",
              "%s: %s: %s/%s Result=%s status=%s\n%s" % (
                  label, RD_UNIT, d.get("ActiveState"), d.get("SubState"), d.get("Result"),
                  d.get("ExecMainStatus"), (boot.report or {}).get("resource_disk_journal", "")[-1500:]))
    return d


def _rd_formatted(res, boot, label, formatted):
    rep = boot.report or {}
    journal = rep.get("resource_disk_journal") or ""
    fs, fs_uuid, mp = _rd_state(rep)
    res.check(fs == "ext4" and mp == "/mnt", "%s: /dev/sda1 is %s on %s (lsblk: %s)" % (
        label, fs, mp, rep.get("lsblk", "")[-400:]))
    res.check(("formatted /dev/sda1 as ext4" in journal) == formatted,
              "%s: expected %s, journal:\n%s" % (label, "a format" if formatted else "no format",
                                                 journal[-1500:]))
    swaps = rep.get("swaps") or ""
    res.check("/mnt/swapfile" in swaps, "%s: swap file not active: %s" % (label, swaps))
    return fs_uuid


def sr1_resource_disk(ctx, res):
    """Boot 1 (first boot): Azure's pristine NTFS disk is formatted, mounted on /mnt, a
    64 MiB swap file active, after Ready. Boot 2 (reboot): the same file system only
    mounted. Boot 3 (redeploy: same VM id, OS disk kept, a fresh pristine disk):
    formatted again."""
    if "rd" not in ctx.images:
        res.skipped = "no rd image: %s" % ctx.images_error.get("rd")
        return
    img = ctx.images["rd"]
    wd = os.path.join(ctx.workdir, "r1-resource-disk")
    os.makedirs(wd, exist_ok=True)
    disk = _rd_disk(os.path.join(wd, "resource1.raw"))
    sc = scen("vmcheck-rd")
    boot = run_boot(ctx, res, "r1-resource-disk", sc, image=img, extra=_rd_qemu(disk))
    provisioned(res, boot, sc, dhcp=False)
    if not boot.report:
        return
    d = _rd_unit_ok(res, boot, "boot 1")
    first = _rd_formatted(res, boot, "boot 1", True)
    # never on the path to Ready: it started after report-ready was done
    ready = ((boot.report.get("units") or {}).get("azure-firstboot-report-ready.service") or {})
    res.check(usec(d, "ExecMainStartTimestampMonotonic") >= usec(ready, "ActiveEnterTimestampMonotonic") > 0,
              "resource disk started at %.2f s, report-ready done at %.2f s" % (
                  usec(d, "ExecMainStartTimestampMonotonic"), usec(ready, "ActiveEnterTimestampMonotonic")))
    res.note("boot 1: formatted, mounted, swap (%s)" % first)

    ov = h.copy_overlay(boot.overlay, os.path.join(wd, "reboot.qcow2"))
    boot2 = run_boot(ctx, res, "r1-reboot", dict(sc), vm_id=sc["vm_id"], overlay=ov, image=img,
                     extra=_rd_qemu(disk))
    if not guest_ok(res, boot2):
        return
    _rd_unit_ok(res, boot2, "boot 2")
    second = _rd_formatted(res, boot2, "boot 2", False)
    res.check(second == first, "reboot: file system %s, first boot made %s" % (second, first))
    res.check("mounting the existing ext4" in (boot2.report.get("resource_disk_journal") or ""),
              "reboot: no 'mounting the existing ext4' line")

    fresh = _rd_disk(os.path.join(wd, "resource2.raw"))
    ov3 = h.copy_overlay(boot2.overlay, os.path.join(wd, "redeploy.qcow2"))
    boot3 = run_boot(ctx, res, "r1-redeploy", dict(sc), vm_id=sc["vm_id"], overlay=ov3, image=img,
                     extra=_rd_qemu(fresh))
    if not guest_ok(res, boot3):
        return
    _rd_unit_ok(res, boot3, "boot 3")
    third = _rd_formatted(res, boot3, "boot 3", True)
    res.check(third and third != first, "redeploy: file system %s, before %s" % (third, first))
    res.note("reboot kept %s; redeploy made %s" % (first, third))


def sr2_resource_disk_with_data(ctx, res):
    """An NTFS resource disk holding a user file besides the warning: never formatted,
    not mounted, one line saying why; the unit and provisioning succeed."""
    if "rd" not in ctx.images:
        res.skipped = "no rd image: %s" % ctx.images_error.get("rd")
        return
    wd = os.path.join(ctx.workdir, "r2-resource-disk-data")
    os.makedirs(wd, exist_ok=True)
    disk = _rd_disk(os.path.join(wd, "data.raw"), ("DATALOSS_WARNING_README.txt", "important.db"))
    with open(disk, "rb") as f:
        before = hashlib.sha256(f.read()).hexdigest()
    sc = scen("vmcheck-rd-data")
    boot = run_boot(ctx, res, "r2-resource-disk-data", sc, image=ctx.images["rd"], extra=_rd_qemu(disk))
    provisioned(res, boot, sc, dhcp=False)
    if not boot.report:
        return
    _rd_unit_ok(res, boot, "data disk")
    journal = boot.report.get("resource_disk_journal") or ""
    lines = [l for l in journal.splitlines() if "NOT formatted" in l]
    res.check(len(lines) == 1 and "holds important.db" in lines[0],
              "expected one 'NOT formatted ... holds important.db' line:\n%s" % journal[-1500:])
    fs, _, mp = _rd_state(boot.report)
    res.check(fs == "ntfs" and not mp, "/dev/sda1 is %s on %r" % (fs, mp))
    res.check("/mnt/swapfile" not in (boot.report.get("swaps") or ""), "swap on a disk left alone")
    with open(disk, "rb") as f:
        res.check(hashlib.sha256(f.read()).hexdigest() == before, "the data disk was written to")
# a1: the package's udev rules on devices QEMU can show. QEMU has no VMBus and no
# Mellanox/MANA VF, so the first step of each rule (which controller a disk hangs on,
# whether a NIC is a bonded VF; tested against Azure's sysfs in
# tests/unit/test_udev_rules.py) is stood in for by a test-only rule that sets the same
# property for the PCI slots below; everything after it runs as on Azure: the Msft /
# Virtual Disk match on scsi_id's answer, the LUN from the SCSI address, the links for the
# disk and its partition, and the VF's marks as networkd, udev and wait-online see them.
AZ_SCSI_SLOT, AZ_VF_SLOT = "0x10", "0x11"
AZ_STANDINS = (
    "# vm-check only (never shipped): QEMU devices standing in for Azure's\n"
    "# virtio-scsi controller at 00:10.0 = VMBus SCSI controller 1 (data disks)\n"
    'SUBSYSTEM=="block", KERNELS=="0000:00:10.0", ENV{AZURE_FIRSTBOOT_SCSI}="scsi1"\n'
    "# virtio-net at 00:11.0 (the first NIC's MAC address) = a VF bonded to hv_netvsc\n"
    'SUBSYSTEM=="net", ACTION!="remove", KERNELS=="0000:00:11.0", ENV{AZURE_FIRSTBOOT_SRIOV_VF}="1"\n')


def _az_standins(root, logfile):
    path = os.path.join(root, "etc/udev/rules.d/70-vmcheck-azure-standins.rules")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(AZ_STANDINS)


def _mbr_disk(path, size=16 << 20):
    """A raw disk with an MBR and one Linux partition (no file system), so udev names
    the partition too."""
    with open(path, "wb") as f:
        f.truncate(size)
        start, count = 2048, size // 512 - 2048
        entry = bytes([0, 0, 0, 0, 0x83, 0, 0, 0]) + start.to_bytes(4, "little") \
            + count.to_bytes(4, "little")
        f.seek(446)
        f.write(entry + bytes(48) + b"\x55\xaa")


def sa1_azure_devices(ctx, res, image="azdev", name="a1-azure-devices"):
    """Data disks as Msft Virtual Disks on SCSI controller 1 (LUN 3, with a partition) next
    to a QEMU disk (LUN 4), a second NIC with the first one's MAC address marked as a VF
    and attached to nothing (no DHCP ever), DMI ids of an Azure VM."""
    if image not in ctx.images:
        res.skipped = "no image: %s" % ctx.images_error.get(image)
        return
    sc = scen("vmcheck-azdev")
    wd = os.path.join(ctx.workdir, name)
    os.makedirs(wd, exist_ok=True)
    _mbr_disk(os.path.join(wd, "lun3.raw"))
    _mbr_disk(os.path.join(wd, "lun4.raw"))
    extra = ["-device", "virtio-scsi-pci,id=azscsi1,addr=%s" % AZ_SCSI_SLOT]
    for lun, vendor, product in ((3, "Msft", "Virtual Disk"), (4, "QEMU", "QEMU HARDDISK")):
        extra += ["-drive", "file=%s,if=none,id=lun%d,format=raw,cache=unsafe"
                  % (os.path.join(wd, "lun%d.raw" % lun), lun),
                  "-device", "scsi-hd,drive=lun%d,bus=azscsi1.0,channel=0,scsi-id=0,lun=%d,"
                  "vendor=%s,product=%s" % (lun, lun, vendor, product)]
    extra += ["-netdev", "hubport,id=vf0,hubid=9",
              "-device", "virtio-net-pci,netdev=vf0,mac=52:54:00:12:34:56,addr=%s" % AZ_VF_SLOT,
              "-smbios", "type=1,manufacturer=Microsoft Corporation,product=Virtual Machine"]
    boot = run_boot(ctx, res, name, sc, image=ctx.images[image], extra=extra)
    provisioned(res, boot, sc)
    rep = boot.report
    if not rep:
        return
    # exactly the Msft disk at LUN 3 and its partition (the QEMU disk at LUN 4 has no
    # name; which of the two the kernel calls sda is not fixed)
    links = rep.get("azure_links") or {}
    disk = links.get("data/by-lun/3", "?")
    res.check(links == {"data/by-lun/3": disk, "data/by-lun/3-part1": disk + "1",
                        "scsi1/lun3": disk, "scsi1/lun3-part1": disk + "1"}
              and disk.startswith("sd"), "/dev/disk/azure links: %s" % links)
    vf = [n for n, props in (rep.get("net_udev") or {}).items()
          if "ID_PATH=pci-0000:00:11.0" in props]
    if res.check(len(vf) == 1, "no NIC at 00:11.0 in %s" % sorted(rep.get("net_udev") or {})):
        props = rep["net_udev"][vf[0]]
        for mark in ("ID_NET_MANAGED_BY=unmanaged", "NM_UNMANAGED=1",
                     "AZURE_FIRSTBOOT_UNMANAGED_SRIOV=1"):
            res.check(mark in props.splitlines(), "%s: no %s" % (vf[0], mark))
        state = [l.split() for l in (rep.get("networkctl") or "").splitlines()
                 if len(l.split()) > 4 and l.split()[1] == vf[0]]
        res.check(state and state[0][4] == "unmanaged",
                  "networkctl says %s: %s" % (vf[0], state or rep.get("networkctl")))
        others = [n for n in rep["net_udev"] if n != vf[0]]
        res.check(others and all("NM_UNMANAGED" not in rep["net_udev"][n] for n in others),
                  "the synthetic NIC is marked too")
    # network-online did not wait for the VF (it never gets a lease: wait-online would
    # hold it for 2 min and fail)
    wo = (rep.get("targets") or {}).get("systemd-networkd-wait-online.service", {})
    took = usec(wo, "ActiveEnterTimestampMonotonic") - usec(wo, "ExecMainStartTimestampMonotonic")
    res.check(wo.get("Result") == "success" and 0 <= took < 60,
              "systemd-networkd-wait-online: %s after %.1f s" % (wo.get("Result"), took))
    res.note("wait-online took %.1f s" % took)
    res.check(rep.get("product_uuid_mode") == "444",
              "product_uuid mode %s" % rep.get("product_uuid_mode"))


def _az_standins_vm_utils(root, logfile):
    """a2's image: a1's stand-ins, in a Debian 13 image whose base has azure-vm-utils."""
    for f in ("usr/lib/udev/rules.d/80-azure-disk.rules",
              "usr/lib/udev/rules.d/10-azure-unmanaged-sriov.rules",
              "usr/lib/systemd/network/01-azure-unmanaged-sriov.network"):
        if not os.path.exists(os.path.join(root, f)):
            raise RuntimeError("azure-vm-utils' %s is not in the image" % f)
    _az_standins(root, logfile)


def sa2_azure_devices_vm_utils(ctx, res):
    """a1 on Debian 13 with azure-vm-utils installed. Its rules match on what QEMU cannot
    show (VMBus device_id, mana/mlx drivers): here they claim nothing, so our rules,
    which step aside by property (not because its files exist), name the stand-ins as
    on Debian 12: the same assertions as a1. Its real rules next to ours on Azure's
    sysfs: tests/pkg/test_udev_debian13.py."""
    sa1_azure_devices(ctx, res, image="azdev-vmutils", name="a2-azure-devices-vm-utils")


# ------------------------------------------------- the image recipe (issue 20)

GENERALIZE = os.path.join(h.REPO, "examples", "generalize.sh")
NETWORK_EXAMPLES = sorted(os.path.join(d, n) for d, _, ns in os.walk(os.path.join(h.REPO, "examples", "network"))
                          for n in ns)
# QEMU has no Hyper-V synthetic NIC: its NICs are virtio_net. A test-only drop-in
# lets the installed files (untouched, still Driver=hv_netvsc) match them too
# (systemd.network: Driver= lists of a drop-in are merged into the file's).
QEMU_DRIVER_DROPIN = "[Match]\nDriver=virtio_net\n"


def generalize_image(deb):
    """The networkd base made into an image by examples/generalize.sh, run as an image
    builder runs it (in the build VM's root, here a chroot; no sudo, so no build user),
    with the driver drop-ins above. generalize.sh ends with "azure-firstboot check":
    the build fails unless the check passes in the image."""
    def customize(root, lf):
        shutil.copy(deb, os.path.join(root, "tmp", os.path.basename(deb)))
        shutil.copy(GENERALIZE, os.path.join(root, "tmp", "generalize.sh"))
        h._chroot(root, ["env", "PACKAGE=/tmp/" + os.path.basename(deb), "sh", "/tmp/generalize.sh"], lf)
        for name in ("09-azure-primary.network", "09-azure-secondary.network"):
            d = os.path.join(root, "etc/systemd/network", name + ".d")
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "qemu-virtio.conf"), "w") as f:
                f.write(QEMU_DRIVER_DROPIN)
    return h.build_image("networkd", deb=None, deprovision=None, customize=customize, tag="generalize",
                         key_files=[deb, GENERALIZE] + NETWORK_EXAMPLES)


def host_check(root):
    """azure-firstboot check --root on a tree, from this checkout (files only)."""
    import subprocess

    p = subprocess.run([sys.executable, "-m", "azure_firstboot", "--root", root, "check", "--json"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=os.path.join(h.REPO, "src")))
    return p.returncode, p.stdout, p.stderr


# what a booted, provisioned VM has by design (check is for an image before capture)
BOOTED = {"machine-id", "host-keys", "state", "leases", "sudoers", "build-user"}


def sn1_generalized_two_nics(ctx, res):
    """An image made by examples/generalize.sh, booted with two NICs and IPv6 (QEMU user
    networking, ipv4=on,ipv6=on, restrict=on): both NICs up and configured by the example
    files, the primary preferred (route metrics), IMDS/WireServer through it, an IPv6
    address and the preferred IPv6 default route on it, Ready; check passes for everything
    an image carries and fails on the untouched base tree."""
    if "generalize" not in ctx.images:
        res.skipped = "no generalize image: %s" % ctx.images_error.get("generalize")
        return
    # the untouched base image: host-side check on the base tree (no boot)
    base = h.base_image("bookworm", h.base_extra("bookworm", "networkd"))
    rc, out, err = host_check(base.root)
    res.check(rc == 1 and '"ready": false' in out, "check on the base tree: rc %s %s %s" % (rc, out[:300], err[:300]))
    if rc == 1:
        failed = sorted(set(p["check"] for p in json.loads(out)["problems"]))
        res.check({"units", "network"} <= set(failed), "base tree: failed checks %s" % failed)
        res.note("base tree fails: %s" % ", ".join(failed))
    sc = scen("vmcheck-2nic")
    # two NICs and IPv6: a slower boot than 1's; the hard limit is doubled
    boot = run_boot(ctx, res, "n1-generalize-2nic", sc, image=ctx.images["generalize"],
                    timeout=2 * BOOT_TIMEOUT, net_opts=",ipv4=on,ipv6=on",
                    extra=["-netdev", "user,id=n1,restrict=on,ipv4=on,ipv6=on",
                           "-device", "virtio-net-pci,netdev=n1,mac=52:54:00:12:34:57"])
    provisioned(res, boot, sc)
    rep = boot.report or {}
    if not rep:
        return
    links = rep.get("ip_link") or ""
    for nic in ("eth0", "eth1"):
        res.check(re.search(r"^\d+: %s: <[^>]*\bUP\b" % nic, links, re.M), "%s is not up: %s" % (nic, links[:400]))
    addrs = rep.get("ip_addr") or ""
    res.check(re.search(r"^\d+: eth1\s+inet 10\.0\.2\.", addrs, re.M), "eth1 has no DHCP address: %s" % addrs)
    # QEMU's user networking with restrict=on sends no router and no DNS option in its
    # DHCP answers (the guest is meant to reach nothing but the guestfwd addresses): the
    # IPv4 metrics show on the DHCP prefix routes, the default routes on IPv6 (RA)
    routes = rep.get("ip_route") or ""
    for nic, metric in (("eth0", "100"), ("eth1", "200")):
        res.check(re.search(r"^\S+ dev %s proto kernel scope link src \S+ metric %s" % (nic, metric), routes, re.M),
                  "no DHCP route on %s with metric %s: %s" % (nic, metric, routes[:400]))
    for addr, out in sorted((rep.get("route_get") or {}).items()):
        res.check(" dev eth0 " in out, "%s is not reached through eth0: %s" % (addr, out.strip()))
    v6 = rep.get("ip6_addr") or ""
    # QEMU advertises fec0::/64 (scope "site"); Azure a global prefix
    res.check(re.search(r"^\d+: eth0\s+inet6 (?!fe80)[0-9a-f:]+/64 scope (global|site) dynamic", v6, re.M),
              "no IPv6 address from router advertisements on eth0: %s" % v6[:400])
    v6r = rep.get("ip6_route") or ""
    v6defaults = re.findall(r"^default via \S+ dev (\S+) proto ra metric (\d+)", v6r, re.M)
    res.check(sorted(v6defaults) == [("eth0", "100"), ("eth1", "200")],
              "IPv6 default routes (dev, metric): %s" % v6defaults)
    nctl = rep.get("networkctl_status") or ""
    for nic, name in (("eth0", "09-azure-primary.network"), ("eth1", "09-azure-secondary.network")):
        res.check(re.search(r"\d+: %s\s*\n(?:.*\n)*?\s+Network File: /etc/systemd/network/%s" % (nic, name), nctl),
                  "%s is not configured by %s: %s" % (nic, name, nctl[:600]))
    res.check(nctl.count("State: routable (configured)") == 2, "not both NICs configured: %s" % nctl[:600])
    # check inside the booted image: what an image carries passes; only what a booted
    # and provisioned VM has by design fails
    cj = rep.get("check_json") or {}
    try:
        problems = json.loads(cj.get("out") or "")["problems"]
    except ValueError:
        problems = None
    res.check(problems is not None, "azure-firstboot check --json in the guest: %s" % cj)
    if problems is not None:
        wrong = [p for p in problems if p["check"] not in BOOTED]
        res.check(not wrong, "check in the guest: %s" % wrong)
        res.note("guest check: only %s" % ", ".join(sorted(set(p["check"] for p in problems))))
def su4_specialized(ctx, res):
    """A specialized VM (an attached OS disk: createOption Attach, blank osProfile): Ready,
    the marker written, no user created, the host name untouched, one line per step."""
    sc = scen("vmcheck-specialized", specialized=True)
    boot = run_boot(ctx, res, "u4-specialized", sc)
    if not guest_ok(res, boot):
        return
    rd = accepted_ready(boot.records)
    res.check(len(rd) == 1, "expected exactly one accepted Ready, got %d" % len(rd))
    res.check(not [p for p in health_posts(boot.records) if p["report"]
                   and p["report"]["substatus"] == "ProvisioningFailed"], "a failure was reported")
    units_succeeded(res, boot)
    rep = boot.report
    res.check(rep["hostname"] == ctx.deprovisioned_hostname,
              "hostname is %r, the image's is %r" % (rep["hostname"], ctx.deprovisioned_hostname))
    res.check(ADMIN_COMMENT not in (rep.get("passwd") or ""), "an admin user was created")
    res.check(not (rep.get("sudoers_d") or {}).get("/etc/sudoers.d/azure-firstboot"),
              "a sudoers rule was written")
    st = rep.get("status_json", {})
    res.check('"provisioned": true' in (st.get("out") or ""),
              "azure-firstboot status --json does not say provisioned: %s" % st)
    journal = rep.get("journal") or ""
    for what in ("host name", "admin user"):
        lines = [l for l in journal.splitlines() if "%s left alone: specialized VM" % what in l]
        res.check(len(lines) == 1, "%s: expected one 'left alone' line, got %r" % (what, lines))
    kvp_and_console(res, boot, ready=True)
    res.note("Ready; hostname %s and accounts untouched" % rep["hostname"])


OVF_ENV_KEYS = """<?xml version="1.0" encoding="utf-8"?>
<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1"
 xmlns:wa="http://schemas.microsoft.com/windowsazure">
<wa:ProvisioningSection><wa:Version>1.0</wa:Version>
<LinuxProvisioningConfigurationSet xmlns="http://schemas.microsoft.com/windowsazure">
<ConfigurationSetType>LinuxProvisioningConfiguration</ConfigurationSetType>
<HostName>%(host)s</HostName><UserName>%(user)s</UserName>
<DisableSshPasswordAuthentication>true</DisableSshPasswordAuthentication>
<SSH><PublicKeys><PublicKey><Fingerprint>6BE7A7C3C8A8F4B123CCA5D0C2F1BE4CA7B63ED7</Fingerprint>
<Path>/home/%(user)s/.ssh/authorized_keys</Path><Value>%(key)s</Value></PublicKey></PublicKeys></SSH>
</LinuxProvisioningConfigurationSet></wa:ProvisioningSection>
<wa:PlatformSettingsSection><wa:Version>1.0</wa:Version><wa:PlatformSettings>
<wa:ProvisionGuestAgent>false</wa:ProvisionGuestAgent></wa:PlatformSettings>
</wa:PlatformSettingsSection></Environment>
"""
IMDS_TIMEOUT = 20  # [imds] timeout of the "imds20" image (default 300)


def _imds20(root, logf):
    """[imds] timeout = 20 in the image's configuration: the fallback to ovf-env.xml in
    20 s instead of 300."""
    conf = os.path.join(root, "etc/azure-firstboot/azure-firstboot.conf")
    with open(conf) as f:
        text = f.read()
    at = text.index("[imds]")
    old = "#timeout = 300\n"
    i = text.index(old, at)
    with open(conf, "w") as f:
        f.write(text[:i] + "timeout = %d\n" % IMDS_TIMEOUT + text[i + len(old):])


def su5_no_imds_medium(ctx, res):
    """IMDS answers 404 throughout: host name, admin user first.last and its key come from
    ovf-env.xml on a UDF medium; SSH login with the key works."""
    name = "first.last"
    sc = scen("vmcheck-imds-name", admin_username="imds-user", imds_forever=404)
    host = "vmcheck-from-ovf"
    wd = os.path.join(ctx.workdir, "u5-no-imds-medium")
    key = _key_copy(wd)
    with open(TEST_KEY + ".pub") as f:
        public = f.read().strip()
    try:
        medium = h.udf_medium(os.path.join(wd, "ovf-env.udf"), {"ovf-env.xml": (OVF_ENV_KEYS % {
            "host": host, "user": name, "key": public}).encode()})
    except RuntimeError as e:
        res.skipped = "cannot build the UDF medium: %s" % str(e).splitlines()[0]
        return
    if "imds20" not in ctx.images:
        res.skipped = "no imds20 image: %s" % ctx.images_error.get("imds20")
        return
    img = ctx.images["imds20"]
    port = h.free_port()
    cmd = "id -un; hostname; sudo -n true && echo SUDO-OK; sudo -n " + RELEASE
    with SshProbe(port, name, cmd, key=key) as probe:
        boot = run_boot(ctx, res, "u5-no-imds-medium", sc, hostfwd=port, cdrom=medium, image=img,
                        append=img.append + " vmreport.hold=%d" % HOLD)
    provisioned(res, boot, dict(sc, computer_name=host), dhcp=False)
    rc, out = probe.result
    # (sudo may warn "unable to resolve host": the image's /etc/hosts has no 127.0.1.1 line)
    res.check(rc == 0 and out.split()[:2] == [name, host] and "SUDO-OK" in out,
              "ssh -i test key %s@ (hostfwd) + sudo -n true: rc=%s after %d attempt(s): %s" % (
                  name, rc, probe.attempts, out.strip()[-300:]))
    rep = boot.report or {}
    res.check(ADMIN_COMMENT in (_admin_line(boot, name) or ""), "no %s account" % name)
    res.check(_admin_line(boot, "imds-user") is None, "the IMDS-only user was created")
    imds = [r for r in boot.records if r.get("service") == "imds"]
    res.check(imds and all(r.get("status") == 404 for r in imds),
              "IMDS answered something other than 404: %s" % sorted(set(r.get("status") for r in imds)))
    journal = rep.get("journal") or ""
    for what in ("host name", "admin user"):
        res.check("the %s comes from ovf-env.xml" % what in journal,
                  "no 'the %s comes from ovf-env.xml' in the journal" % what)
    rd = accepted_ready(boot.records)
    if rd:
        res.check(rd[0]["t"] >= IMDS_TIMEOUT, "Ready at %.1f s, before the IMDS wait ended" % rd[0]["t"])
    res.note("ssh %s@ with the key ok after %d attempt(s); host name from ovf-env.xml" % (
        name, probe.attempts) if rc == 0 else "ssh failed")


def missing_tools():
    if os.geteuid() != 0:
        return "needs root (debootstrap, chroot, dpkg in the image)"
    path = h.SYSPATH + ":" + os.environ.get("PATH", "")
    for tool in ("qemu-system-x86_64", "qemu-img", "debootstrap", "socat", "mkfs.ext4", "mkntfs", "ntfscp"):
        if not shutil.which(tool, path=path):
            return "%s not installed (see .ci/apt-packages)" % tool
    return None


def netns_unavailable():
    for tool in ("ip", "dnsmasq", "qemu-system-x86_64"):
        if not shutil.which(tool, path=h.SYSPATH + ":" + os.environ.get("PATH", "")):
            return "%s not installed" % tool
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun missing (no tap devices)"
    if os.geteuid() != 0:
        return "needs root for ip netns / tap"
    return None


SCENARIOS = [
    ("1", "first boot", s1_first_boot),
    ("2", "reboot, same VM id", s2_reboot),
    ("3", "clone: same disk, new VM id", s3_clone),
    ("4", "WireServer refuses 60 s, then 503s", s4_ws_refuse_then_503),
    ("5", "incarnation bump (410 on health)", s5_incarnation_bump),
    ("6", "IMDS 410 for 70 s", s6_imds_gone),
    ("7a", "hostile name $(reboot)", s7a),
    ("7b", "hostile name a_b", s7b),
    ("7c", "hostile name 300 chars", s7c),
    ("8", "not on Azure (no asset tag)", s8_not_azure),
    ("9", "ifupdown+dhclient, option 245", s9_ifupdown_option245),
    ("10", "make vm-test: BIOS/GRUB image + reboot", s10_vmtest_bios_image),
    ("11", "NetworkManager (internal DHCP)", s11_nm_first_boot),
    ("12", "NetworkManager, option 245", s12_nm_option245),
    ("13", "Debian 13 (networkd): first boot", s13_trixie_first),
    ("14", "Debian 13: reboot, same VM id", s14_trixie_reboot),
    ("15", "Debian 13: clone", s15_trixie_clone),
    ("16", "make vm-test: UEFI/GPT image + reboot", s16_vmtest_uefi_image),
    ("17", "DHCP answers 20 s late (tap, networkd)", s17_dhcp_late),
    # the admin user (issue 9): u = user, ids kept apart from the numbered network matrix
    ("u1", "admin user: ssh with the key, sudo -n", su1_ssh_key_sudo),
    ("u2", "hostile admin user name", su2_hostile_user),
    ("u3", "password from a UDF ovf-env.xml medium", su3_password_udf),
    # the resource disk (issue 19): r = resource disk
    ("r1", "resource disk: format, reboot, redeploy, swap", sr1_resource_disk),
    ("r2", "resource disk with a user file: kept", sr2_resource_disk_with_data),
    # what waagent's package carried besides provisioning (issue 19): a = Azure devices
    ("a1", "udev: Azure disk names, VF unmanaged", sa1_azure_devices),
    ("a2", "udev on Debian 13 + azure-vm-utils", sa2_azure_devices_vm_utils),
    ("se1", "SELinux enforcing: ssh with the key", sse1_selinux_enforcing),
    # the image recipe (issue 20): n = network
    ("n1", "generalize.sh image, 2 NICs + IPv6", sn1_generalized_two_nics),
    # creation modes and sources (issue 18)
    ("u4", "specialized disk: Ready, nothing changed", su4_specialized),
    ("u5", "IMDS 404 + medium: first.last, ssh key", su5_no_imds_medium),
]
# long scenarios first, so the two workers finish together
ORDER = ["1", "r1", "4", "6", "13", "u3", "u5", "u1", "se1", "2", "3", "14", "15", "9", "17", "10", "16",
         "11", "12", "n1", "5", "7a", "7b", "7c", "8", "u2", "r2", "a1", "a2", "u4"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--deb", default=None, help="the .deb to test (default: newest dist/*.deb)")
    ap.add_argument("--only", default=None, help="comma-separated scenario ids")
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("VM_JOBS", "2")))
    ap.add_argument("--workdir", default=os.path.join(h.REPO, "build", "vm-check"))
    args = ap.parse_args(argv)

    problem = missing_tools()
    if problem:
        print("vm-check: %s" % problem, file=sys.stderr)
        print("0 passed, 1 failed")
        return 1
    deb = args.deb or h.find_deb()
    if not deb or not os.path.exists(deb):
        print("vm-check: no .deb found (run make deb)", file=sys.stderr)
        print("0 passed, 1 failed")
        return 1
    want = [s for s in ORDER if not args.only or s in args.only.split(",")]
    t_all = time.time()
    if os.path.exists(args.workdir):
        shutil.rmtree(args.workdir)
    os.makedirs(args.workdir)

    images, images_error = {}, {}
    t = time.time()
    images["networkd"] = h.build_image("networkd", deb=os.path.abspath(deb))
    if "9" in want:
        try:
            images["ifupdown"] = h.build_image("ifupdown", deb=os.path.abspath(deb))
        except Exception as e:
            images_error["ifupdown"] = str(e)[:300]
    extra = []  # (key, scenarios needing it, build_image keywords)
    extra.append(("grub", ("10",), dict(layout="mbr-grub", instrument=False)))
    extra.append(("nm", ("11", "12"), dict(variant="nm")))
    extra.append(("trixie", ("13", "14", "15"), dict(suite="trixie")))
    extra.append(("efi", ("16",), dict(suite="trixie", layout="gpt-efi", instrument=False)))
    # host keys kept: sshd is up long before the user step, which must then make the
    # running sshd apply its drop-in (SIGHUP); the other images make sshd wait for keygen
    extra.append(("keys", ("u1",), dict(deprovision=("--machine-id", "--hostname"))))
    extra.append(("rd", ("r1", "r2"), dict(customize=_rd_config, tag="rd")))
    # the stand-in rules are not part of build_image's cache key: their hash is, in the tag
    extra.append(("azdev", ("a1",), dict(customize=_az_standins, tag="azdev-" + hashlib.sha1(
        AZ_STANDINS.encode()).hexdigest()[:8])))
    # Debian 13 + azure-vm-utils (a base of its own, shared with tests/pkg/test_udev_debian13.py)
    extra.append(("azdev-vmutils", ("a2",), dict(
        suite="trixie", packages=("azure-vm-utils",), customize=_az_standins_vm_utils,
        tag="azdev-" + hashlib.sha1(AZ_STANDINS.encode()).hexdigest()[:8])))
    # Debian 12 + selinux-policy-default, labelled at build time, booted enforcing
    extra.append(("selinux", ("se1",), dict(variant="selinux",
                                            deprovision=("--machine-id", "--hostname"))))
    # [imds] timeout = 20: the fallback to ovf-env.xml without the 300 s wait
    extra.append(("imds20", ("u5",), dict(customize=_imds20, tag="imds20")))
    todo = [(k, kw) for k, sids, kw in extra if any(s in want for s in sids)]
    if "n1" in want:
        todo.append(("generalize", dict(special=generalize_image)))

    def build(item):
        k, kw = item
        kw = dict(kw)
        try:
            if "special" in kw:
                images[k] = kw["special"](os.path.abspath(deb))
                return
            images[k] = h.build_image(kw.pop("variant", "networkd"), deb=os.path.abspath(deb),
                                      **kw)
        except Exception as e:
            images_error[k] = str(e)[:300]
    # two at a time (2 cores): a cold cache debootstraps the Debian 13 and the
    # NetworkManager bases side by side
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as ex:
        list(ex.map(build, todo))
    h.prune_images(images.values())
    t_images = time.time() - t
    ctx = Ctx(args.workdir, images)
    ctx.images_error = images_error
    # a deprovisioned image has no name of its own: systemd's fallback "localhost"
    ctx.deprovisioned_hostname = h.image_hostname(images["networkd"]) or "localhost"
    for sid in ctx.first_done:
        if sid not in want:
            ctx.first_done[sid].set()

    results = {}
    funcs = {sid: (title, fn) for sid, title, fn in SCENARIOS}

    def one(sid):
        title, fn = funcs[sid]
        res = Result(sid, title)
        results[sid] = res
        h.log("scenario %s (%s) ..." % (sid, title))
        try:
            fn(ctx, res)
        except Exception:
            res.error = traceback.format_exc()
        h.log("scenario %s: %s" % (sid, "PASS" if res.ok else
                                   ("SKIP" if res.skipped else "FAIL")))
        return res

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as ex:
        list(ex.map(one, want))

    # details of failures first, then the table
    passed = failed = skipped = 0
    for sid in [s for s, _, _ in SCENARIOS if s in results]:
        r = results[sid]
        if r.ok:
            passed += 1
            continue
        if r.skipped is not None:
            skipped += 1
            continue
        failed += 1
        print("=" * 72)
        print("FAIL scenario %s (%s)" % (sid, r.title))
        for f in r.failures:
            print("  - " + f)
        if r.error:
            print(r.error)
        for b in r.boots:
            print("  artifacts: %s" % b.workdir)
            if b.report and b.report.get("journal"):
                print("  --- journal of the azure-firstboot units (guest):")
                print("\n".join("    " + l for l in b.report["journal"].splitlines()[-40:]))
            else:
                print("  --- serial log tail:")
                print("\n".join("    " + l for l in b.serial_tail(40).splitlines()))
    print()
    print("%-4s %-38s %-6s %-11s %-11s %s" % ("id", "scenario", "result", "boot->Ready",
                                            "DHCP->Ready", "notes"))
    for sid in [s for s, _, _ in SCENARIOS if s in results]:
        r = results[sid]
        verdict = "PASS" if r.ok else ("SKIP" if r.skipped is not None else "FAIL")
        ready = "%.1f s" % r.ready_s if r.ready_s is not None else "-"
        dr = "%.1f s" % r.dhcp_to_ready_s if r.dhcp_to_ready_s is not None else "-"
        extra = r.skipped if r.skipped is not None else "; ".join(r.notes)
        print("%-4s %-38s %-6s %-11s %-11s %s" % (sid, r.title[:38], verdict, ready, dr,
                                                  extra[:100]))
    print("images %.0f s, total %.0f s, artifacts in %s" % (t_images, time.time() - t_all,
                                                         args.workdir))
    print("%d passed, %d failed%s" % (passed, failed,
                                      ", %d skipped" % skipped if skipped else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""make vm-test IMAGE=...: boot an image builder's own image against the fabric emulator.

usage: vmtest.py --image DISK [--kernel VMLINUZ --initrd INITRD --append CMDLINE]
                 [--computer-name NAME] [--reboot] [--scenario JSON|@FILE] ...

The image (qcow2, raw or Azure's fixed VHD) is never written: every boot runs on a qcow2
overlay in --workdir. QEMU/TCG gets the same setup as the vm-check matrix: user-mode
networking with restrict=on on 168.0.0.0/7, 168.63.129.16:80 and 169.254.169.254:80 led
to the emulator, SMBIOS VM id and Azure's chassis asset tag, a pcap of the NIC and the
serial console in a log. Without --kernel the image boots through its own boot loader
(BIOS; --firmware for UEFI), so its kernel command line must have console=ttyS0 to show
anything in the serial log (Azure images do). The VM is powered off (ACPI) a few seconds
after the emulator accepted a Ready or a ProvisioningFailed report, or at --timeout.

Passes (exit 0) when exactly one Ready with the goal state's ids was accepted and, with
--reboot, the second boot of the same disk and VM id sent nothing to the WireServer.
"""

import argparse
import json
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import vmcheck  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description="Boot your image against the Azure fabric emulator.")
    ap.add_argument("--image", required=True, help="disk image (qcow2, raw, vpc/VHD)")
    ap.add_argument("--kernel", help="boot this kernel directly (else the image's boot loader)")
    ap.add_argument("--initrd", help="initrd for --kernel")
    ap.add_argument("--append", default="root=/dev/vda rw console=ttyS0",
                    help="kernel command line with --kernel (default: %(default)s; "
                         "partitioned images: root=/dev/vda1 ...)")
    ap.add_argument("--computer-name", default="vmtest-%s" % uuid.uuid4().hex[:6])
    ap.add_argument("--vm-id", default=None, help="VM id (SMBIOS uuid); default random")
    ap.add_argument("--scenario", default=None,
                    help="extra emulator scenario keys, JSON or @FILE "
                         "(see python3 tests/fabric_emulator.py --help)")
    ap.add_argument("--reboot", action="store_true",
                    help="boot the same disk again (same VM id): expect no WireServer request")
    ap.add_argument("--no-asset-tag", action="store_true", help="boot as if not on Azure")
    ap.add_argument("--timeout", type=float, default=600, help="hard limit per boot (s)")
    ap.add_argument("--settle", type=float, default=10,
                    help="seconds to keep the VM running after Ready (default %(default)s)")
    ap.add_argument("--reboot-wait", type=float, default=90,
                    help="seconds the reboot runs before it is powered off (default %(default)s)")
    ap.add_argument("--disk-if", default="virtio", help="virtio (default), ide or scsi")
    ap.add_argument("--firmware", default=None, help="-bios FILE, e.g. /usr/share/ovmf/OVMF.fd")
    ap.add_argument("--mem", type=int, default=1024)
    ap.add_argument("--workdir", default=os.path.join(h.REPO, "build", "vm-test"))
    a = ap.parse_args(argv)
    res = run(a)
    return 0 if res.ok else 1


def run(a, quiet=False):
    """Boot (and with a.reboot, reboot) the image; returns a vmcheck.Result with
    ready_s. Everything printed also goes to <workdir>/vm-test.txt."""
    os.makedirs(a.workdir, exist_ok=True)
    txt = open(os.path.join(a.workdir, "vm-test.txt"), "w")

    def print(*args, **kw):  # noqa: A001 - tee to the workdir
        line = " ".join(str(x) for x in args)
        txt.write(line + "\n")
        txt.flush()
        if not quiet:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    img = h.Image(a.image, kernel=a.kernel, initrd=a.initrd, append=a.append,
                  instrumented=False, name=os.path.basename(a.image))
    extra = {}
    if a.scenario:
        raw = open(a.scenario[1:]).read() if a.scenario.startswith("@") else a.scenario
        extra = json.loads(raw)
    sc = vmcheck.scen(a.computer_name, **extra)
    if a.vm_id:
        sc["vm_id"] = a.vm_id
    asset = None if a.no_asset_tag else h.ASSET_TAG
    qkw = dict(mem=a.mem, disk_if=a.disk_if, firmware=a.firmware)

    def settled(seen):
        def stop_when(fab):
            recs = fab.records()
            done = vmcheck.accepted_ready(recs) or [
                p for p in vmcheck.health_posts(recs) if p["status"] == 200 and p["report"]
                and p["report"]["substatus"] == "ProvisioningFailed"]
            if done and not seen:
                seen.append(time.time())
            return bool(seen) and time.time() - seen[0] >= a.settle
        return stop_when

    print("vm-test: booting %s (format %s) as VM %s, computerName %r; artifacts in %s"
          % (a.image, img.fmt, sc["vm_id"], a.computer_name, a.workdir), flush=True)
    res = vmcheck.Result("vm-test", "first boot")
    with h.Fabric(a.workdir, sc, name="fabric-boot1") as fab:
        b1 = h.boot(img, a.workdir, "boot1", sc["vm_id"], fabric=fab, asset_tag=asset,
                    timeout=a.timeout, stop_when=settled([]), **qkw)
        recs = fab.records()
        ready = vmcheck.accepted_ready(recs)
        tl = h.timeline(b1, recs, fab.t0_wall)
        ready_s = tl["boot_to_ready_s"]
    print("\nboot 1 ended by %s after %.1f s; emulator saw %d request(s):" % (
        b1.how, b1.duration, len(recs)))
    for r in recs:
        rep = vmcheck.health_posts([r])
        desc = ""
        if rep and rep[0]["report"]:
            x = rep[0]["report"]
            desc = " -> %s%s" % (x["state"], "/" + x["substatus"] if x["substatus"] else "")
        print("  %7.2f s  %-10s %-4s %s  %s%s" % (r["t"], r["service"], r["method"],
                                                  r["path"][:70], r["status"], desc))
    names = sorted(set(p["hostname"] for p in h.dhcp_packets(b1.pcap)
                       if p["from_client"] and p["hostname"]))
    print("host names sent in DHCP requests: %s" % (", ".join(names) or "none"))
    if a.no_asset_tag:
        res.check(not recs, "requests sent although the asset tag is absent")
    else:
        res.check(len(ready) == 1, "expected exactly one accepted Ready, got %d" % len(ready))
        if ready:
            r = ready[0]["report"]
            res.check((r["incarnation"], r["container_id"], r["instance_id"]) ==
                      (sc["incarnation"], sc["container_id"], sc["instance_id"]),
                      "Ready carries other ids than the goal state's")
        if a.computer_name not in names:
            res.note("no DHCP request carried %r (Azure DNS would not learn the name)"
                     % a.computer_name)
    if a.reboot and b1.how in ("stopped", "poweroff"):
        with h.Fabric(a.workdir, sc, name="fabric-boot2") as fab2:
            b2 = h.boot(img, a.workdir, "boot2", sc["vm_id"], fabric=fab2, overlay=b1.overlay,
                        asset_tag=asset, timeout=a.reboot_wait + 60,
                        stop_when=lambda f, t0=time.time(): time.time() - t0 > a.reboot_wait,
                        **qkw)
            recs2 = fab2.records()
        ws = vmcheck.ws_requests(recs2)
        print("boot 2 (reboot, same disk and VM id): %d WireServer, %d IMDS request(s)" % (
            len(ws), len(recs2) - len(ws)))
        res.check(not ws, "the reboot sent %d request(s) to the WireServer" % len(ws))
    print("serial log: %s" % b1.serial_log)
    if not res.ok:
        print("--- serial log tail:\n" + b1.serial_tail(30))
    for n in res.notes:
        print("note: " + n)
    for f in res.failures:
        print("FAIL: " + f)
    print("boot -> Ready: %s, first DHCP ACK -> Ready: %s" % tuple(
        "%.1f s" % v if v is not None else "-" for v in (ready_s, tl["dhcp_to_ready_s"])))
    print("vm-test: %s" % ("PASS" if res.ok else "FAIL"))
    res.ready_s = ready_s
    res.dhcp_to_ready_s = tl["dhcp_to_ready_s"]
    res.boots.append(b1)
    txt.close()
    return res


if __name__ == "__main__":
    sys.exit(main())

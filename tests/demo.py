#!/usr/bin/env python3
"""make demo: the four units against the fabric emulator in a scratch root.

Boot 1 provisions (network-wait -> hostname -> user -> report-ready; the user
step creates the admin user with useradd --root, which needs root), boot 2 is a
reboot of the same VM (nothing to do, nothing sent), boot 3 is a clone (new
VM id: provisions again).  Prints what each step said and how long it took.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from fabric_emulator import Fabric  # noqa: E402

SRC = os.path.join(os.path.dirname(HERE), "src")
STEPS = ("network-wait", "hostname", "user", "report-ready")


def write(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)


def scratch_tree(root, fab, vm_id, conf_name, with_user=True):
    """A VM's files under ``root`` for --root runs against ``fab``: Azure's DMI
    asset tag and ``vm_id``, a host name, the account databases useradd --root
    works on, an sshd_config with the drop-in Include, and a configuration
    ``conf_name`` pointing at the emulator (the user step off unless
    ``with_user``: useradd --root needs root).  Returns the configuration's path.
    Also used by bench/micro.py."""
    write(root, "sys/class/dmi/id/chassis_asset_tag", "7783-7084-3265-9085-8269-3286-77\n")
    write(root, "sys/class/dmi/id/product_uuid", vm_id + "\n")
    write(root, "etc/hostname", "localhost\n")
    write(root, "etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\tlocalhost\n")
    write(root, "etc/passwd", "root:x:0:0:root:/root:/bin/bash\n")
    write(root, "etc/group", "root:x:0:\nsudo:x:27:\nusers:x:100:\n")
    write(root, "etc/shadow", "root:*:19000:0:99999:7:::\n")
    write(root, "etc/gshadow", "root:*::\nsudo:*::\n")
    write(root, "etc/login.defs", "UID_MIN 1000\nUID_MAX 60000\nUSERGROUPS_ENAB yes\n")
    write(root, "etc/ssh/sshd_config", "Include /etc/ssh/sshd_config.d/*.conf\n")
    for d in ("etc/sudoers.d", "home"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    write(root, conf_name, "[wireserver]\nendpoint = %s\n[imds]\nendpoint = %s\n%s" % (
        fab.wireserver_address, fab.imds_address, "" if with_user else "[user]\nenabled = no\n"))
    return os.path.join(root, conf_name)


def boot(root, conf, fab, title):
    print("\n== %s" % title)
    shutil.rmtree(os.path.join(root, "run"), ignore_errors=True)
    before = len(fab.requests())
    total = 0.0
    for step in STEPS:
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "azure_firstboot", "--config", conf, "--root", root, step],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                              env=dict(os.environ, PYTHONPATH=SRC))
        took = time.monotonic() - started
        total += took
        print("-- %-13s exit %d  %6.3f s" % (step, proc.returncode, took))
        for line in proc.stdout.splitlines():
            print("   | " + line)
    sent = fab.requests()[before:]
    print("   %d request(s) reached the fabric: %s" % (
        len(sent), ", ".join("%s %s -> %s" % (r["method"], r["path"].split("?")[-1][:40], r["status"])
                             for r in sent) or "none"))
    print("   total %.3f s; /etc/hostname = %s" % (
        total, open(os.path.join(root, "etc/hostname")).read().strip()))
    admins = [l.split(":") for l in open(os.path.join(root, "etc/passwd")) if "azure-firstboot" in l]
    for fields in admins:
        keys = os.path.join(root, fields[5].lstrip("/"), ".ssh/authorized_keys")
        print("   admin user %s (UID %s, home %s): %d key(s) in ~/.ssh/authorized_keys; sudoers: %s" % (
            fields[0], fields[2], fields[5],
            len(open(keys).read().splitlines()) if os.path.exists(keys) else 0,
            open(os.path.join(root, "etc/sudoers.d/azure-firstboot")).read().splitlines()[-1]
            if os.path.exists(os.path.join(root, "etc/sudoers.d/azure-firstboot")) else "none"))


def main():
    root = tempfile.mkdtemp(prefix="azure-firstboot-demo.")
    try:
        with Fabric({"computer_name": "demo-vm", "name": "demo_vmss_0", "admin_username": "demo",
                     "goalstate_statuses": [[503, {"Retry-After": "1"}]]}).start() as fab:
            conf = scratch_tree(root, fab, "5C9F1C56-64F7-4D55-9A0B-6C2F0E8B7A31", "demo.conf",
                                with_user=os.geteuid() == 0)
            if os.geteuid() != 0:
                print("not root: the user step is disabled (useradd --root needs root)")
            print("fabric emulator: WireServer %s, IMDS %s (first goal state answers 503 + Retry-After: 1)"
                  % (fab.wireserver_address, fab.imds_address))
            print("scratch root: %s" % root)
            boot(root, conf, fab, "boot 1: first boot of VM 5c9f1c56-...")
            boot(root, conf, fab, "boot 2: reboot of the same VM (must be a no-op)")
            write(root, "sys/class/dmi/id/product_uuid", "0B8F6D4E-1111-2222-3333-444455556666\n")
            fab.configure(vm_id="0b8f6d4e-1111-2222-3333-444455556666", computer_name="demo-clone")
            boot(root, conf, fab, "boot 3: a clone of the disk (new VM id 0b8f6d4e-...)")
            print("\nhealth reports accepted by the fabric:")
            for report in fab.health_reports():
                print("   %(state)s incarnation=%(incarnation)s container=%(container_id)s "
                      "instance=%(instance_id)s" % report)
            print("\n$ azure-firstboot status")
            subprocess.run([sys.executable, "-m", "azure_firstboot", "--config", conf, "--root", root, "status"],
                           env=dict(os.environ, PYTHONPATH=SRC))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

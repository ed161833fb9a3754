"""systemd/azure-firstboot-generator: the reboot fast path, run as sh on scratch roots."""

import os
import subprocess

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GENERATOR = os.path.join(TOP, "systemd", "azure-firstboot-generator")
VM_ID = "5c9f1c56-64f7-4d55-9a0b-6c2f0e8b7a31"


def run(root, uuid, marker):
    for rel, text in (("sys/class/dmi/id/product_uuid", uuid), ("var/lib/azure-firstboot/provisioned", marker)):
        if text is not None:
            path = os.path.join(str(root), rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as handle:
                handle.write(text)
    proc = subprocess.run(["sh", GENERATOR, "/tmp/n", "/tmp/e", "/tmp/l"], env={"AZURE_FIRSTBOOT_ROOT": str(root)},
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""
    flag = os.path.join(str(root), "run/azure-firstboot/provisioned")
    return open(flag).read() if os.path.exists(flag) else None


def test_marker_of_this_vm_writes_the_flag(tmp_path):
    marker = "incarnation=1\ntime=2026-11-26T12:00:00Z\nvm_id=%s\n" % VM_ID
    assert run(tmp_path, VM_ID + "\n", marker) == VM_ID + "\n"


@pytest.mark.parametrize("uuid, marker", [
    (VM_ID + "\n", "vm_id=0b8f6d4e-1111-2222-3333-444455556666\n"),   # a clone
    (VM_ID + "\n", None),                                              # never provisioned
    (None, "vm_id=%s\n" % VM_ID),                                      # no DMI
    (VM_ID.upper() + "\n", "vm_id=%s\n" % VM_ID.upper()),              # not normalized: agent decides
    ("$(touch /tmp/x)\n", "vm_id=$(touch /tmp/x)\n"),
    (VM_ID + "\n", "vm_id=%s-extra\n" % VM_ID),
])
def test_anything_else_writes_nothing(tmp_path, uuid, marker):
    assert run(tmp_path, uuid, marker) is None


def test_agent_marker_is_what_the_generator_reads(tmp_path):
    """The generator parses the marker the agent writes (state.format_record)."""
    import sys

    sys.path.insert(0, os.path.join(TOP, "src"))
    from azure_firstboot.state import Paths, State

    os.makedirs(str(tmp_path / "var/lib/azure-firstboot"))
    State(Paths(str(tmp_path)), VM_ID).mark_provisioned("3")
    assert run(tmp_path, VM_ID + "\n", None) == VM_ID + "\n"

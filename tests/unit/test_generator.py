"""systemd/azure-firstboot-generator: the reboot and off-Azure fast paths, run as sh
(dash when installed, as on Debian) on scratch roots."""

import os
import subprocess

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GENERATOR = os.path.join(TOP, "systemd", "azure-firstboot-generator")
VM_ID = "5c9f1c56-64f7-4d55-9a0b-6c2f0e8b7a31"
AZURE_TAG = "7783-7084-3265-9085-8269-3286-77\n"
SHELLS = [sh for sh in ("/bin/dash", "/bin/sh") if os.path.exists(sh)][:1] or ["sh"]


def _write(root, rel, text):
    if text is not None:
        path = os.path.join(str(root), rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(text)


def flags(root, uuid=None, marker=None, tag=AZURE_TAG, conf=None):
    """Run the generator on ``root``; {flag name: content} it wrote."""
    _write(root, "sys/class/dmi/id/product_uuid", uuid)
    _write(root, "sys/class/dmi/id/chassis_asset_tag", tag)
    _write(root, "var/lib/azure-firstboot/provisioned", marker)
    _write(root, "etc/azure-firstboot/azure-firstboot.conf", conf)
    proc = subprocess.run([SHELLS[0], GENERATOR, "/tmp/n", "/tmp/e", "/tmp/l"],
                          env={"AZURE_FIRSTBOOT_ROOT": str(root)},
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""
    run_dir = os.path.join(str(root), "run/azure-firstboot")
    names = sorted(os.listdir(run_dir)) if os.path.isdir(run_dir) else []
    return {n: open(os.path.join(run_dir, n)).read() for n in names}


def run(root, uuid, marker):
    """On Azure: the provisioned flag's content, or None."""
    found = flags(root, uuid, marker)
    assert set(found) <= {"provisioned"}
    return found.get("provisioned")


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


# ---------------------------------------------------------------- off Azure

@pytest.mark.parametrize("tag", ["\n", "", "Default string\n", "7783-7084-3265-9085-8269-3286-78\n"])
def test_off_azure_writes_the_not_azure_flag(tmp_path, tag):
    """No Python process off Azure: the asset tag is readable and not Azure's."""
    marker = "vm_id=%s\n" % VM_ID  # even a matching marker: off Azure wins
    assert flags(tmp_path, VM_ID + "\n", marker, tag=tag) == {"not-azure": "chassis asset tag: %s\n" % tag.strip()}


def test_the_example_configuration_keeps_the_default(tmp_path):
    with open(os.path.join(TOP, "systemd", "azure-firstboot.conf")) as handle:
        conf = handle.read()
    assert "#assume_azure = no" in conf
    assert list(flags(tmp_path, tag="\n", conf=conf)) == ["not-azure"]


@pytest.mark.parametrize("conf", [
    "[provisioning]\nassume_azure = no\n",
    "[provisioning]\n  assume_azure\t=\toff  \n# assume_azure = yes\n",
    "[hostname]\nenabled = yes\n[provisioning]\ndeadline = 60\n",
    "[imds]\nassume_azure = yes\n",          # another section's key: not this one (and an error later)
    "[provisioning]\nassume_azure = false",   # no final newline
])
def test_assume_azure_off_still_skips(tmp_path, conf):
    assert list(flags(tmp_path, tag="\n", conf=conf)) == ["not-azure"]
    # the agent would not act either: assume_azure off, or a configuration error
    import sys

    sys.path.insert(0, os.path.join(TOP, "src"))
    from azure_firstboot import config

    try:
        assert config.parse(conf)[("provisioning", "assume_azure")] is False
    except config.ConfigError:
        pass


@pytest.mark.parametrize("conf", [
    "[provisioning]\nassume_azure = yes\n",
    "[provisioning]\nassume_azure=1\n",
    "[provisioning]\nassume_azure = Yes\n",
    "[provisioning]\r\nassume_azure = yes\r\n",       # CRLF: unsure
    "[ Provisioning ]\nassume_azure = yes\n",          # spelling the agent accepts
    "[provisioning]\nASSUME_AZURE = yes\n",
    "[provisioning]\nassume_azure: yes\n",
    "[provisioning]\nassume_azure = no\nassume_azure = yes\n",  # twice: the agent's error
    "[provisioning]\nassume_azure = \"no\"\n",
    "[provisioning]\nassume_azure = maybe\n",
])
def test_assume_azure_yes_or_unsure_writes_nothing(tmp_path, conf):
    """The units then run and the agent's parser decides (or reports the error)."""
    assert flags(tmp_path, tag="\n", conf=conf) == {}


def test_unreadable_configuration_writes_nothing(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    _write(tmp_path, "etc/azure-firstboot/azure-firstboot.conf", "")
    os.chmod(str(tmp_path / "etc/azure-firstboot/azure-firstboot.conf"), 0)
    assert flags(tmp_path, tag="\n") == {}


def test_no_dmi_writes_nothing(tmp_path):
    assert flags(tmp_path, VM_ID + "\n", "vm_id=%s\n" % VM_ID, tag=None) == {}


@pytest.mark.parametrize("conf", ["[provisioning]\nassume_azure = yes\n", "[provisioning]\nassume_azure = yes\r\n"])
def test_agent_parser_agrees_when_the_generator_is_sure(conf):
    """Where the generator writes nothing for 'yes', the agent's parser says yes or errors."""
    import sys

    sys.path.insert(0, os.path.join(TOP, "src"))
    from azure_firstboot import config

    assert config.parse(conf)[("provisioning", "assume_azure")] is True

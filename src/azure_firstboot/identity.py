"""The machine's identity: DMI (Azure's chassis asset tag, the VM id from
product_uuid) and the firmware kind (UEFI or BIOS)."""

import os

from azure_firstboot import protocol
from azure_firstboot.state import read_text

DMI = "/sys/class/dmi/id/"


class Identity(object):
    __slots__ = ("on_azure", "asset_tag", "vm_id", "problem")

    def __init__(self, on_azure, asset_tag, vm_id, problem):
        self.on_azure = on_azure
        self.asset_tag = asset_tag
        self.vm_id = vm_id
        self.problem = problem


def read_identity(paths):
    try:
        tag = (read_text(paths(DMI + "chassis_asset_tag"), 4096) or "").strip()
    except OSError:
        tag = ""
    try:
        raw = read_text(paths(DMI + "product_uuid"), 4096)
    except OSError as exc:
        # "(not root?)" only when that is the cause: product_uuid is root-only
        hint = " (not root?)" if isinstance(exc, PermissionError) and os.geteuid() != 0 else ""
        raw, problem = None, "cannot read %s: %s%s" % (exc.filename, exc.strerror or exc, hint)
    else:
        problem = "%s does not exist" % paths(DMI + "product_uuid")
    if raw is None:
        vm_id = None
    else:
        vm_id = protocol.normalize_vm_id(raw)
        problem = None if vm_id else "%s does not hold a UUID: %r" % (
            paths(DMI + "product_uuid"), raw.strip()[:60])
    return Identity(tag == protocol.AZURE_ASSET_TAG, tag, vm_id, problem)


def firmware_is_uefi(paths):
    """Gen2 (UEFI) rather than Gen1 (BIOS): /sys/firmware/efi or /dev/efi
    exists (how cloud-init and azure-init tell them apart)."""
    return os.path.exists(paths("/sys/firmware/efi")) or os.path.exists(paths("/dev/efi"))

"""The VM id in the KVP report and the failure Description (issue 18 item 5):
as Azure reports it (IMDS compute.vmId).  Gen1 VMs expose the SMBIOS id with
the first three groups byte-swapped; Gen2 (UEFI) as it is; the IMDS vmId the
hostname step saw wins when it is one of the two forms."""

import os

import pytest
from hypothesis import given, strategies as hs

from fabric_emulator import Fabric
from test_agent_e2e import VM_ID, Machine, assert_ok
from test_report_e2e import pool_records

from azure_firstboot import protocol

GEN1_RAW = protocol.gen1_swap(VM_ID)  # what a Gen1 VM's product_uuid holds for VM_ID


def test_azure_vm_id_rules():
    assert protocol.azure_vm_id(VM_ID, uefi=True) == VM_ID
    assert protocol.azure_vm_id(GEN1_RAW, uefi=False) == VM_ID
    assert protocol.azure_vm_id(GEN1_RAW, uefi=True, imds_id=VM_ID.upper()) == VM_ID
    assert protocol.azure_vm_id(VM_ID, uefi=False, imds_id=VM_ID) == VM_ID
    # an IMDS id that is neither form is not believed
    assert protocol.azure_vm_id(VM_ID, uefi=True, imds_id="00000000-0000-0000-0000-000000000000") == VM_ID
    assert protocol.azure_vm_id(VM_ID, uefi=True, imds_id="garbage\x1b") == VM_ID
    assert protocol.azure_vm_id(None, uefi=True, imds_id=VM_ID) is None
    # the example of azure-init's documentation
    assert protocol.gen1_swap("550e8400-e29b-41d4-a716-446655440000") == "00840e55-9be2-d441-a716-446655440000"


HEX = hs.text("0123456789abcdef", min_size=32, max_size=32).map(
    lambda h: "-".join((h[:8], h[8:12], h[12:16], h[16:20], h[20:])))


@given(HEX, hs.booleans())
def test_azure_vm_id_is_one_of_the_two_forms_and_imds_agrees(smbios, uefi):
    azure = protocol.azure_vm_id(smbios, uefi)
    assert azure in (smbios, protocol.gen1_swap(smbios))
    assert protocol.same_vm(smbios, azure)
    assert protocol.azure_vm_id(smbios, not uefi, imds_id=azure) == azure
    assert protocol.gen1_swap(protocol.gen1_swap(smbios)) == smbios


def kvp_vm_id(m):
    _, records = pool_records(m)
    fields = dict(f.split("=", 1) for f in records[0][1].split("|"))
    return fields["vm_id"]


@pytest.mark.parametrize("uefi", [False, True])
def test_gen1_smbios_id_is_reported_as_imds_says(tmp_path, fab_gen1, uefi):
    """A Gen1 VM (SMBIOS id byte-swapped): the hostname step saw IMDS's vmId;
    the KVP record carries that, whatever the firmware looks like."""
    m = Machine(tmp_path, fab_gen1, vm_id=GEN1_RAW)
    os.makedirs(m.path("var/lib/hyperv"))
    if uefi:
        os.makedirs(m.path("sys/firmware/efi"))
    procs = m.boot()
    assert_ok(procs)
    assert "does not match" not in procs[1].stderr
    assert kvp_vm_id(m) == VM_ID
    assert "vm_id=%s" % GEN1_RAW in m.read("var/lib/azure-firstboot/provisioned")  # the marker: SMBIOS


@pytest.mark.parametrize("uefi, expected", [(False, VM_ID), (True, GEN1_RAW)])
def test_without_imds_the_firmware_decides(tmp_path, fab_gen1, uefi, expected):
    m = Machine(tmp_path, fab_gen1, vm_id=GEN1_RAW, hostname__enabled="no")
    os.makedirs(m.path("var/lib/hyperv"))
    if uefi:
        os.makedirs(m.path("sys/firmware/efi"))
    assert_ok(m.boot())
    assert kvp_vm_id(m) == expected


@pytest.fixture
def fab_gen1():
    with Fabric({"vm_id": VM_ID}).start() as fabric:
        yield fabric

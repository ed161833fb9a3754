"""creation: how the VM was created and where its identity comes from (pure)."""

import pytest

from azure_firstboot import creation

ED = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEaZhwlR22lMmhve4dgEdglhWwsIr/x1/Yfe3rwf2W2a "
      "azure-firstboot-test-key (TEST ONLY, never trust it)")


def imds(computer="myvm", user="alice", create="FromImage", pps=None, keys=(ED,), **profile):
    doc = {"compute": {
        "osProfile": dict({"computerName": computer, "adminUsername": user,
                           "disablePasswordAuthentication": "true"}, **profile),
        "publicKeys": [{"keyData": k, "path": "/home/%s/.ssh/authorized_keys" % user} for k in keys],
        "storageProfile": {"osDisk": {"createOption": create}},
    }}
    if pps is not None:
        doc["extended"] = {"compute": {"ppsType": pps, "hasCustomData": "false"}}
    return doc


OVF = {"hostname": "ovfhost", "username": "bob", "disable_ssh_password_auth": "true",
       "keys": [{"fingerprint": "ABC", "path": "/home/bob/.ssh/authorized_keys", "value": ED}]}


def test_generalized():
    assert creation.mode(imds(), None)[0] == creation.GENERALIZED
    assert creation.mode(imds(pps="None"), OVF)[0] == creation.GENERALIZED
    assert creation.mode(imds(pps=""), {"preprovisioned_vm": "false"})[0] == creation.GENERALIZED
    assert creation.mode(None, OVF)[0] == creation.GENERALIZED


@pytest.mark.parametrize("doc", [
    imds(create="Attach"),
    imds(create="attach", computer="", user=""),
    imds(create="Attach", computer="named", user="alice"),
    imds(computer="", user="", create="FromImage"),   # a specialized gallery image
    imds(computer="", user="  ", create=""),
    imds(computer=None, user=None, create=None),
])
def test_specialized(doc):
    how, why = creation.mode(doc, None)
    assert how == creation.SPECIALIZED and "specialized VM" in why and "\n" not in why


@pytest.mark.parametrize("doc", [
    imds(computer="", user="alice"),        # a generalized VM with a blank name still fails
    imds(computer="myvm", user=""),
    {"compute": {"storageProfile": {"osDisk": {"createOption": "FromImage"}}}},  # no osProfile
    {"compute": {}},
])
def test_a_blank_name_alone_is_not_specialized(doc):
    assert creation.mode(doc, None)[0] == creation.GENERALIZED


@pytest.mark.parametrize("doc, ovf, fragment", [
    (imds(pps="Running"), None, "ppsType is 'Running'"),
    (imds(pps="Savable"), None, "ppsType is 'Savable'"),
    (imds(pps="PreprovisionedOSDisk", create="Attach"), None, "PreprovisionedOSDisk"),
    (imds(), {"preprovisioned_vm": "true"}, "PreprovisionedVm is true"),
    (imds(), {"preprovisioned_vm": "True", "preprovisioned_vm_type": "Savable"}, "type 'Savable'"),
    (None, {"preprovisioned_vm": True}, "PreprovisionedVm is true"),
    (imds(pps="\x1b[31m"), None, "'\\x1b[31m'"),
])
def test_preprovisioned_is_refused(doc, ovf, fragment):
    with pytest.raises(creation.Refused) as err:
        creation.mode(doc, ovf)
    text = str(err.value)
    assert text.startswith("pre-provisioning is not supported (") and fragment in text
    assert text.isprintable()


def test_computer_name_sources_and_disagreement():
    assert creation.computer_name(imds(), None) == ("myvm", "IMDS", [])
    assert creation.computer_name(imds(), {"hostname": "MyVM"}) == ("myvm", "IMDS", [])
    name, source, notes = creation.computer_name(imds(), OVF)
    assert (name, source) == ("myvm", "IMDS")
    assert notes == ["IMDS and ovf-env.xml disagree on the host name ('myvm', 'ovfhost'): IMDS is used"]
    assert creation.computer_name(None, OVF) == ("ovfhost", "ovf-env.xml", [])
    with pytest.raises(ValueError, match="computerName is missing"):
        creation.computer_name(imds(computer=""), OVF)
    with pytest.raises(ValueError, match="no HostName"):
        creation.computer_name(None, {"username": "bob"})


def test_admin_sources_and_disagreement():
    spec, source, notes = creation.admin(imds(), OVF)
    assert (spec.username, source, spec.keys) == ("alice", "IMDS", [(ED, "/home/alice/.ssh/authorized_keys")])
    assert notes == ["IMDS and ovf-env.xml disagree on the admin user name ('alice', 'bob'): IMDS is used"]
    assert creation.admin(imds(user="bob"), OVF)[2] == []
    spec, source, notes = creation.admin(None, OVF)
    assert (spec.username, source, notes) == ("bob", "ovf-env.xml", [])
    assert spec.keys == [(ED, "/home/bob/.ssh/authorized_keys")] and spec.password_auth is False


@pytest.mark.parametrize("ovf, password_auth", [
    ({"username": "bob", "disable_ssh_password_auth": "false", "password": "pw"}, True),
    ({"username": "bob", "disable_ssh_password_auth": "true", "password": "pw"}, False),
    ({"username": "bob", "password": "pw"}, True),
    ({"username": "bob"}, False),
])
def test_password_flag_from_ovf(ovf, password_auth):
    assert creation.admin(None, ovf)[0].password_auth is password_auth


@pytest.mark.parametrize("ovf, fragment", [
    ({"hostname": "h"}, "no UserName"),
    ({"username": " "}, "no UserName"),
    ({"username": "bob", "keys": [{"fingerprint": "1234ABCD", "path": "/home/bob/.ssh/authorized_keys"}]},
     "only by its Fingerprint '1234ABCD'"),
    ({"username": "bob", "keys": [{"path": "/home/bob/.ssh/authorized_keys", "value": ""}]}, "no Value"),
    ({"username": "bob", "disable_ssh_password_auth": "maybe"}, "neither true nor false"),
])
def test_ovf_admin_problems(ovf, fragment):
    with pytest.raises(ValueError) as err:
        creation.admin(None, ovf)
    assert fragment in str(err.value)


def test_ovf_key_without_path_goes_to_the_default():
    spec = creation.admin(None, {"username": "bob", "keys": [{"value": ED}]})[0]
    assert spec.keys == [(ED, "/home/bob/.ssh/authorized_keys")]

"""creation: how the VM was created and where its identity comes from (pure)."""

import pytest

from azure_firstboot import creation
from azure_firstboot.accounts import OvfEnv, OvfKey

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


def ovf(**fields):
    return OvfEnv(**fields)


OVF = ovf(hostname="ovfhost", username="bob", disable_ssh_password_auth=True,
          keys=[OvfKey("ABC", "/home/bob/.ssh/authorized_keys", ED)])


def test_generalized():
    assert creation.mode(imds(), None)[0] == creation.GENERALIZED
    assert creation.mode(imds(pps="None"), OVF)[0] == creation.GENERALIZED
    assert creation.mode(imds(pps=""), ovf(preprovisioned=False))[0] == creation.GENERALIZED
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
    (imds(), ovf(preprovisioned=True), "PreprovisionedVm is true"),
    (imds(), ovf(preprovisioned=True, preprovisioned_type="Savable"), "type 'Savable'"),
    (None, ovf(preprovisioned=True, username="bob"), "PreprovisionedVm is true"),
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
    assert creation.computer_name(imds(), ovf(hostname="MyVM")) == ("myvm", "IMDS", [])
    name, source, notes = creation.computer_name(imds(), OVF)
    assert (name, source) == ("myvm", "IMDS")
    assert notes == ["IMDS and ovf-env.xml disagree on the host name ('myvm', 'ovfhost'): IMDS is used"]
    assert creation.computer_name(None, OVF) == ("ovfhost", "ovf-env.xml", [])
    with pytest.raises(ValueError, match="computerName is missing"):
        creation.computer_name(imds(computer=""), OVF)
    with pytest.raises(ValueError, match="no HostName"):
        creation.computer_name(None, ovf(username="bob"))


def test_admin_sources_and_disagreement():
    spec, source, notes = creation.admin(imds(), OVF)
    assert (spec.username, source, spec.keys) == ("alice", "IMDS", [(ED, "/home/alice/.ssh/authorized_keys")])
    assert notes == ["IMDS and ovf-env.xml disagree on the admin user name ('alice', 'bob'): IMDS is used"]
    assert creation.admin(imds(user="bob"), OVF)[2] == []
    spec, source, notes = creation.admin(None, OVF)
    assert (spec.username, source, notes) == ("bob", "ovf-env.xml", [])
    assert spec.keys == [(ED, "/home/bob/.ssh/authorized_keys")] and spec.password_auth is False


@pytest.mark.parametrize("fields, password_auth", [
    (dict(username="bob", disable_ssh_password_auth=False, password="pw"), True),
    (dict(username="bob", disable_ssh_password_auth=True, password="pw"), False),
    (dict(username="bob", password="pw"), True),
    (dict(username="bob"), False),
])
def test_password_flag_from_ovf(fields, password_auth):
    assert creation.admin(None, ovf(**fields))[0].password_auth is password_auth


@pytest.mark.parametrize("fields, fragment", [
    (dict(hostname="h"), "no UserName"),
    (dict(username="bob", keys=[OvfKey("1234ABCD", "/home/bob/.ssh/authorized_keys", "")]),
     "only by its Fingerprint '1234ABCD'"),
    (dict(username="bob", keys=[OvfKey("", "/home/bob/.ssh/authorized_keys", "")]), "no Value"),
])
def test_ovf_admin_problems(fields, fragment):
    with pytest.raises(ValueError) as err:
        creation.admin(None, ovf(**fields))
    assert fragment in str(err.value)


def test_no_source_at_all():
    with pytest.raises(ValueError, match="neither IMDS nor ovf-env.xml"):
        creation.admin(None, None)
    with pytest.raises(ValueError, match="no HostName"):
        creation.computer_name(None, None)


def test_ovf_key_without_path_goes_to_the_default():
    spec = creation.admin(None, ovf(username="bob", keys=[OvfKey(value=ED)]))[0]
    assert spec.keys == [(ED, "/home/bob/.ssh/authorized_keys")]


def test_notes_need_both_sources():
    assert creation.computer_name_notes(None, OVF) == []
    assert creation.computer_name_notes(imds(), None) == []
    assert creation.computer_name_notes(imds(computer="OVFHOST"), OVF) == []
    assert len(creation.computer_name_notes(imds(), OVF)) == 1

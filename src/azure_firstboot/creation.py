"""How the VM was created, and where its identity comes from: pure functions
of the IMDS instance document and the values of ovf-env.xml, shared by the
hostname and user steps (no file, no network, no clock).

- **Pre-provisioned** (ovf-env.xml ``PreprovisionedVm`` true, or IMDS
  ``extended.compute.ppsType`` other than ``None``): refused with
  "pre-provisioning is not supported"; such a VM is handed to a customer
  later with another identity, and a Ready now would be a lie.
- **Specialized** (IMDS ``compute.storageProfile.osDisk.createOption`` is
  ``Attach``, or ``compute.osProfile`` has neither a ``computerName`` nor an
  ``adminUsername``: an attached OS disk, Site Recovery, Backup restore, a
  specialized gallery image): the disk was provisioned before; the steps
  change nothing and the VM reports Ready.
- **Generalized**: everything else.  The host name and the admin user come
  from IMDS; only when IMDS is unavailable (no answer within ``[imds]
  timeout``) from ovf-env.xml on the provisioning medium.  When both name a
  user or host and disagree, IMDS wins and the difference is noted.  A blank
  or invalid name fails the step as before.

``doc`` is the parsed IMDS instance document (a dict) or None when IMDS was
unavailable; ``ovf`` the accounts.OvfEnv of accounts.parse_ovf_env, or None
when no medium was read.
"""

from azure_firstboot import accounts, protocol

GENERALIZED = "generalized"
SPECIALIZED = "specialized"
PPS_UNSUPPORTED = "pre-provisioning is not supported"


class Refused(Exception):
    """The VM cannot be provisioned; the message is the one-line reason."""


def _blank(value):
    return value is None or (isinstance(value, str) and not value.strip())


def _true(value):
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.strip().lower() == "true"


def _compute(doc):
    compute = protocol.json_get(doc, "compute")
    return compute if isinstance(compute, dict) else {}


def mode(doc, ovf):
    """-> (GENERALIZED or SPECIALIZED, why: one line).  Raises Refused for a
    pre-provisioned VM."""
    pps = protocol.json_get(doc, "extended", "compute", "ppsType")
    if not _blank(pps) and pps != "None":
        raise Refused("%s (IMDS extended.compute.ppsType is %s)" % (
            PPS_UNSUPPORTED, accounts.shown(pps, 40)))
    if ovf is not None and ovf.preprovisioned:
        kind = ovf.preprovisioned_type
        raise Refused("%s (ovf-env.xml PreprovisionedVm is true%s)" % (
            PPS_UNSUPPORTED, ", type %s" % accounts.shown(kind, 40) if not _blank(kind) else ""))
    if doc is None:
        return GENERALIZED, "IMDS unavailable: the identity comes from ovf-env.xml"
    compute = _compute(doc)
    create = protocol.json_get(compute, "storageProfile", "osDisk", "createOption")
    if isinstance(create, str) and create.strip().lower() == "attach":
        return SPECIALIZED, ("specialized VM (IMDS storageProfile.osDisk.createOption is Attach): "
                             "the OS disk was provisioned before")
    profile = compute.get("osProfile")
    if isinstance(profile, dict) and _blank(profile.get("computerName")) and _blank(
            profile.get("adminUsername")):
        return SPECIALIZED, ("specialized VM (IMDS osProfile has no computerName and no "
                             "adminUsername): the OS disk was provisioned before")
    return GENERALIZED, "generalized VM"


def _differ(what, imds_value, ovf_value, fold=False):
    """A note when IMDS and ovf-env.xml both name something and disagree."""
    if _blank(imds_value) or _blank(ovf_value) or not isinstance(imds_value, str):
        return []
    a, b = imds_value.strip(), ovf_value.strip()
    if (a.lower() == b.lower()) if fold else (a == b):
        return []
    return ["IMDS and ovf-env.xml disagree on the %s (%s, %s): IMDS is used" % (
        what, accounts.shown(a, 40), accounts.shown(b, 40))]


def computer_name(doc, ovf):
    """-> (host name as given, where it came from, [notes]).  ValueError when
    the source has none."""
    if doc is None:
        name = ovf.hostname if ovf is not None else None
        if _blank(name):
            raise ValueError("ovf-env.xml has no HostName")
        return name.strip(), "ovf-env.xml", []
    name = protocol.json_get(doc, "compute", "osProfile", "computerName")
    if not isinstance(name, str) or not name:
        raise ValueError("IMDS compute.osProfile.computerName is missing or empty")
    return name, "IMDS", computer_name_notes(doc, ovf)


def computer_name_notes(doc, ovf):
    """[a note] when IMDS and ovf-env.xml name different hosts (host names
    are case-insensitive), else []."""
    if doc is None or ovf is None:
        return []
    return _differ("host name", protocol.json_get(doc, "compute", "osProfile", "computerName"),
                   ovf.hostname, fold=True)


def admin(doc, ovf):
    """-> (accounts.AdminSpec, where it came from, [notes]).  ValueError
    naming the field when the source lacks what is needed."""
    if doc is None:
        if ovf is None:
            raise ValueError("neither IMDS nor ovf-env.xml names the admin user")
        return accounts.admin_from_ovf(ovf), "ovf-env.xml", []
    spec = accounts.admin_from_imds(protocol.json_get(doc, "compute"))
    notes = _differ("admin user name", spec.username, ovf.username) if ovf is not None else []
    return spec, "IMDS", notes

"""A generalized image tree as "azure-firstboot check" wants it (on disk, for
--root): the units enabled, systemd-networkd with examples/network/'s files,
sshd reading sshd_config.d first, no identity, no build user.  Tests take it
and break one thing at a time."""

import os

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETWORK = os.path.join(TOP, "examples", "network")
UNITS = ("azure-firstboot-network-wait.service", "azure-firstboot-hostname.service",
         "azure-firstboot-user.service", "azure-firstboot-report-ready.service",
         "azure-firstboot-ssh-keygen.service")


def example(rel):
    with open(os.path.join(NETWORK, rel), encoding="utf-8") as handle:
        return handle.read()


def good_files():
    """{relative path: text} of a good image (a symlink: ("->", target))."""
    files = {
        "etc/machine-id": "",
        "etc/hostname": "",
        "etc/passwd": "root:x:0:0:root:/root:/bin/bash\n"
                      "_apt:x:42:65534::/nonexistent:/usr/sbin/nologin\n",
        "etc/login.defs": "UID_MIN 1000\nUID_MAX 60000\n",
        "etc/azure-firstboot/azure-firstboot.conf": "",
        "usr/sbin/sshd": "",
        "etc/ssh/sshd_config": "Include /etc/ssh/sshd_config.d/*.conf\n\nPasswordAuthentication no\n"
                               "KbdInteractiveAuthentication no\n",
        "etc/ssh/sshd_config.d/.keep": "",
        "usr/lib/systemd/systemd-networkd": "",
        "etc/systemd/system/multi-user.target.wants/systemd-networkd.service":
            ("->", "/lib/systemd/system/systemd-networkd.service"),
        "etc/systemd/network/09-azure-primary.network": example("systemd-networkd/09-azure-primary.network"),
        "etc/systemd/network/09-azure-secondary.network":
            example("systemd-networkd/09-azure-secondary.network"),
        "etc/sudoers.d/README": "",
    }
    for unit in UNITS:
        wants = "network-online.target.wants" if "network-wait" in unit else "multi-user.target.wants"
        files["etc/systemd/system/%s/%s" % (wants, unit)] = ("->", "/lib/systemd/system/" + unit)
    return files


def write(root, files):
    """Create ``files`` ({rel: text, or ("->", target) for a symlink, or None to
    remove}) under ``root``."""
    for rel, content in files.items():
        path = os.path.join(root, rel)
        if content is None:
            if os.path.lexists(path):
                os.unlink(path)
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.lexists(path):
            os.unlink(path)
        if isinstance(content, tuple):
            os.symlink(content[1], path)
        else:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(content)
    return root


def good_image(root, extra=None):
    files = good_files()
    files.update(extra or {})
    return write(root, files)

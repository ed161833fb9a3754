"""examples/generalize.sh, run for real as the last step of an image build: in a
Debian 12 chroot that runs Debian's waagent and has a build user with an SSH key
and a sudoers entry, as Packer's shell provisioner runs it (sudo -E sh SCRIPT)."""

import os
import shutil

from conftest import PKG, UNITS, wants_link

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_generalize_sh_turns_a_waagent_build_vm_into_an_image(chroot, deb):
    ch = chroot
    ch.fake_systemd()
    # the build VM as its own agent left it
    ch.sh("useradd --create-home --shell /bin/bash packer"
          " && install -d -m 0700 -o packer -g packer /home/packer/.ssh"
          " && echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHbuild build' > /home/packer/.ssh/authorized_keys"
          " && mkdir -p /etc/sudoers.d && echo 'packer ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/waagent"
          " && mkdir -p /etc/ssh /var/lib/dhcp /var/lib/waagent"
          " && echo key > /etc/ssh/ssh_host_ed25519_key && echo pub > /etc/ssh/ssh_host_ed25519_key.pub"
          " && echo 0123456789abcdef0123456789abcdef > /etc/machine-id"
          " && echo build-vm > /etc/hostname"
          " && echo 'lease {}' > /var/lib/dhcp/dhclient.eth0.leases"
          " && echo '<ovf/>' > /var/lib/waagent/ovf-env.xml")
    shutil.copy(deb, ch.path("/tmp/" + os.path.basename(deb)))
    shutil.copy(os.path.join(TOP, "examples/generalize.sh"), ch.path("/tmp/script_1234.sh"))

    # as "sudo -E sh SCRIPT" run by the build user: sudo sets SUDO_USER
    out = ch.sh("SUDO_USER=packer PACKAGE=/tmp/%s sh /tmp/script_1234.sh 2>&1" % os.path.basename(deb),
                check=False)
    assert out.returncode == 0, out.stdout[-4000:]
    log = out.stdout

    # ours installed and enabled, waagent purged with its state
    assert ch.sh("dpkg-query -W -f='${db:Status-Abbrev}' %s" % PKG).stdout.startswith("ii")
    assert ch.sh("dpkg-query -W -f='${db:Status-Abbrev}' waagent", check=False).stdout.strip() in ("", "un")
    for path in ("/usr/sbin/waagent", "/var/lib/waagent", "/etc/waagent.conf", "/etc/sudoers.d/waagent"):
        assert not os.path.lexists(ch.path(path)), path
    for unit in UNITS:
        assert os.path.islink(ch.path(wants_link(unit))), unit
    # nothing of ours ran on the "build VM"
    assert not any(PKG in l and " start" in l for l in ch.systemctl_log())

    # generalized: identity gone, no warning about leftover agents
    assert open(ch.path("/etc/machine-id")).read() == ""
    assert open(ch.path("/etc/hostname")).read() == ""
    assert not os.path.exists(ch.path("/etc/ssh/ssh_host_ed25519_key"))
    assert not os.path.exists(ch.path("/var/lib/dhcp/dhclient.eth0.leases"))
    assert "warning: deprovision" not in log, log

    # the build user, its home and key are gone; so are the script and the package
    assert "packer:" not in open(ch.path("/etc/passwd")).read()
    assert not os.path.exists(ch.path("/home/packer"))
    assert not os.path.exists(ch.path("/tmp/script_1234.sh"))
    assert not os.path.exists(ch.path("/tmp/" + os.path.basename(deb)))
    assert "removed the admin user packer and its home /home/packer" in log
    assert "generalize.sh: done" in log

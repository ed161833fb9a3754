"""SELinux: the files the user step creates get the label the policy gives them.

On a system with SELinux enabled, ~/.ssh and authorized_keys written by the
user unit carry the label of the directory they were made in (user_home_t),
and sshd, allowed to read only ssh_home_t there, refuses the key on an
enforcing system although the VM reported Ready.  WALinuxAgent runs
``chcon -t ssh_home_t``, cloud-init ``restorecon``; this runs ``restorecon
-F`` on exactly those paths (an argument list through commands.run, never a
shell): restorecon knows the loaded policy, its file contexts and its home
directory templates, and runs in its own domain where the policy allows it.

Enabled means selinuxfs is mounted: ``/sys/fs/selinux/enforce`` exists ("1"
enforcing, "0" permissive).  Under ``--root DIR`` only DIR's tree counts
(DIR/sys/fs/selinux/enforce, which an image tree does not have); when it
says so, ``setfiles -r DIR`` labels the paths with DIR's own policy
(SELINUXTYPE from DIR/etc/selinux/config).  Without SELinux nothing is read
but that one path, and nothing is run.

A relabel that fails fails the user step when SELinux is enforcing (sshd
would refuse the key); when permissive it is a warning.

Pure: mode(), selinux_type(), relabel_argv().  Shell: relabel().
"""

import os

ENFORCE = "/sys/fs/selinux/enforce"
CONFIG = "/etc/selinux/config"
DEFAULT_TYPE = "targeted"  # libselinux's default when the configuration names none


def mode(enforce):
    """The contents of /sys/fs/selinux/enforce (None: absent) -> None (SELinux
    is not enabled), "enforcing" or "permissive"."""
    if enforce is None:
        return None
    return "enforcing" if enforce.strip() == "1" else "permissive"


def selinux_type(config):
    """SELINUXTYPE= of /etc/selinux/config's text (None: absent) -> the policy
    name; DEFAULT_TYPE when not given; None when the value could name a path
    outside /etc/selinux (empty after '=', '/', '..')."""
    value = DEFAULT_TYPE
    for line in (config or "").splitlines():
        key, sep, rest = line.strip().partition("=")
        if sep and key.strip() == "SELINUXTYPE":
            value = rest.strip().strip("\"'")
    if not value or "/" in value or value in (".", ".."):
        return None
    return value


def targets(home, files):
    """The paths the user step made under ``home`` for ``files`` (relative
    paths such as ".ssh/authorized_keys"): each directory below the home
    and the file, in order, without duplicates (pure)."""
    out = []
    base = home.rstrip("/")
    for rel in files:
        parts = [p for p in rel.split("/") if p]
        for n in range(1, len(parts) + 1):
            path = "/".join([base] + parts[:n])
            if path not in out:
                out.append(path)
    return out


def relabel_argv(targets, root=None, policy=None):
    """The command that gives ``targets`` (absolute paths as seen in the
    tree) their policy label: on the running system (``root`` None)
    ``restorecon -F -- TARGETS``; in a tree at ``root``, ``setfiles -F -r ROOT
    ROOT/etc/selinux/POLICY/contexts/files/file_contexts ROOT/TARGETS``."""
    if root is None:
        return ["restorecon", "-F", "--"] + list(targets)
    top = root.rstrip("/")
    return (["setfiles", "-F", "-r", top,
             "%s/etc/selinux/%s/contexts/files/file_contexts" % (top, policy)]
            + [top + t for t in targets])


def relabel(paths, home, files):
    """Give what the user step made for ``files`` under ``home`` (targets())
    their SELinux label when SELinux is enabled in the tree ``paths`` maps.  Returns (mode, problem):
    (None, None) without SELinux (nothing was run); ``problem`` is a one-line
    reason when the relabel failed on an enforcing system (the caller fails),
    else None (a permissive system's failure is logged as a warning)."""
    from azure_firstboot import commands, log
    from azure_firstboot.state import read_text

    current = mode(read_text(paths(ENFORCE), 64))
    if current is None:
        return None, None
    root = None
    policy = None
    if not paths.is_host:
        root = paths.root
        policy = selinux_type(read_text(paths(CONFIG), 64 * 1024))
        if policy is None:
            return current, _failed(current, "%s names no usable SELINUXTYPE" % paths(CONFIG))
    made = targets(home, files)
    if not made:
        return current, None
    argv = relabel_argv(made, root, policy)
    ok, output = commands.run(argv, timeout=60)
    if ok:
        log.info("SELinux %s: relabelled %s (%s)" % (current, " ".join(made), os.path.basename(argv[0])))
        return current, None
    if not output.startswith(argv[0] + ":"):
        output = "%s: %s" % (argv[0], output or "failed")
    return current, _failed(current, output)


def _failed(current, why):
    from azure_firstboot import log

    reason = "SELinux is %s, but ~/.ssh and authorized_keys could not be given their label " \
             "(sshd would refuse the key): %s" % (current, why)
    if current == "enforcing":
        return reason
    log.warning(reason)
    return None

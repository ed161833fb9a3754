"""Commands for people: status (one screen, or --json) and deprovision
(prepare an image for capture)."""

import errno
import fnmatch
import os

from azure_firstboot import __version__, log, state as st


# status exit codes (documented in 'status --help' and the man page)
PROVISIONED, FAILED, USAGE, NOT_YET, NOT_AZURE, UNREADABLE = 0, 1, 2, 3, 4, 5
WORDS = {PROVISIONED: "provisioned", FAILED: "failed", NOT_YET: "not yet", NOT_AZURE: "not on Azure",
         UNREADABLE: "unknown"}
POLL = 0.5
# status --wait without --timeout gives up after this long (longer than the
# units take with the default configuration: network_timeout 300 s, then
# report-ready's deadline 1200 s); --timeout 0 waits without a bound
WAIT_DEFAULT = 1800.0


def boot_identity(ctx):
    """(vm_id, on_azure, source): from product_uuid when readable (root), else
    from what this boot's units recorded world-readably: the generator's
    /run/azure-firstboot/provisioned (holds the VM id) or the units'
    /run/azure-firstboot/identity."""
    ident = ctx.identity
    assume = ctx.config[("provisioning", "assume_azure")]
    if ident.vm_id is not None:
        return ident.vm_id, ident.on_azure or assume, "SMBIOS"
    noted = st.read_record(ctx.paths.run("identity")) or {}
    if noted.get("vm_id"):
        return noted["vm_id"], True, "recorded by the units in this boot"
    flag = st.read_text(ctx.paths.run("provisioned"), 256, own=True)
    if flag and flag.strip():
        return flag.strip(), True, "recorded at boot (provisioned)"
    return None, ident.on_azure or assume, None


def assess(ctx):
    """-> (exit code, one-line detail, vm_id, records, marker).  UNREADABLE
    when a record it needs could not be read (not a regular file, permission
    denied, I/O error) and the marker does not already say Ready."""
    try:
        code, detail, vm_id, records, marker = _assess(ctx)
    except OSError as exc:
        return UNREADABLE, "cannot read the state: %s" % st.describe(exc), None, None, None
    problems = records.unreadable if records is not None else []
    if problems and code != PROVISIONED:
        return UNREADABLE, "cannot read the state: %s" % problems[0], vm_id, records, marker
    return code, detail, vm_id, records, marker


def _assess(ctx):
    vm_id, on_azure, _ = boot_identity(ctx)
    if not on_azure:
        return NOT_AZURE, "chassis asset tag %r is not Azure's; nothing to do" % ctx.identity.asset_tag, \
            vm_id, None, None
    if vm_id is None:
        problem = ctx.identity.problem
        if problem and "not root?" not in problem:
            return FAILED, "cannot tell which VM this is: %s" % problem, None, None, None
        return NOT_YET, "the first-boot units have not recorded this VM yet (%s)" % problem, None, None, None
    records = st.State(ctx.paths, vm_id)
    marker = records.provisioned()
    if marker is not None:
        return PROVISIONED, "Ready reported for incarnation %s at %s" % (
            marker.get("incarnation"), marker.get("time")), vm_id, records, marker
    final = records.outcome("report-ready")
    result = final.get("result") if final else None
    if result == "failed":
        return FAILED, final.get("reason") or "report-ready failed", vm_id, records, None
    if result == "started" and not _running(final.get("pid"), "report-ready"):
        return FAILED, "report-ready started at %s but did not finish (crashed or killed)" % (
            final.get("time")), vm_id, records, None
    if result == "ok":  # Ready acknowledged, but no marker (it could not be written)
        return FAILED, "Ready was reported but the provisioned marker is missing", vm_id, records, None
    return NOT_YET, "the first-boot units have not finished in this boot", vm_id, records, None


def _running(pid, step, proc="/proc"):
    """Is ``pid`` (from the "started" record of ``step``) that step's process,
    still running?  Believed only when /proc says it is: its cgroup names the
    step's unit, or its command line is azure-firstboot's with the step as a
    word (by hand, tests).  A pid that is gone, or is any other process (a
    pid reused after a crash), is not: the step crashed or was killed.  Only
    when /proc hides the process (hidepid) while it exists is it believed
    unchecked (--wait is bounded anyway)."""
    from azure_firstboot.protocol import wire_number

    number = wire_number(pid or "", 7)
    if not number:
        return False
    base = "%s/%d/" % (proc, number)
    try:
        cgroup = st.read_bytes(base + "cgroup", 65536)
        cmdline = st.read_bytes(base + "cmdline", 65536)
    except OSError:
        cgroup = cmdline = None
    if cgroup is None or cmdline is None:
        if os.path.isdir(base):
            return False
        try:
            os.kill(number, 0)
        except OSError as exc:
            return exc.errno == errno.EPERM  # exists but hidden from us
        return False  # alive, yet /proc has no entry: not a process of this host's /proc
    unit = ("/azure-firstboot-%s.service" % step).encode("ascii")
    if any(line.endswith(unit) for line in cgroup.splitlines()):
        return True
    words = cmdline.split(b"\0")
    program = any(w == b"azure_firstboot" or w.endswith(b"/azure-firstboot") or w == b"azure-firstboot"
                  for w in words[:3])
    return program and step.encode("ascii") in words


def _source(ctx):
    try:
        return boot_identity(ctx)[2]
    except OSError:
        return None


def _emit(text):
    """Print for status; a reader that went away (``status | head -0``) is
    not an error: the rest of the output goes nowhere, quietly."""
    import sys

    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def status(ctx, as_json, wait=False, timeout=None):
    """``timeout``: seconds --wait waits at most (None: WAIT_DEFAULT, 0: no bound)."""
    if wait:
        import time

        if timeout is None:
            timeout = WAIT_DEFAULT
        end = None if timeout == 0 else time.monotonic() + timeout
        while True:
            code = assess(ctx)[0]
            if code != NOT_YET or (end is not None and time.monotonic() >= end):
                break
            time.sleep(POLL if end is None else max(0.0, min(POLL, end - time.monotonic())))
    code, detail, vm_id, records, marker = assess(ctx)
    ident = ctx.identity
    steps = {step: (records.latest(step) if records else None) for step in st.STEPS}
    doc = {
        "status": WORDS[code],
        "exit_code": code,
        "detail": detail,
        "version": __version__,
        "vm_id": vm_id,
        "vm_id_source": _source(ctx),
        "vm_id_problem": ident.problem if vm_id is None else None,
        "on_azure": ident.on_azure,
        "assume_azure": ctx.config[("provisioning", "assume_azure")],
        "chassis_asset_tag": ident.asset_tag,
        "provisioned": marker is not None,
        "marker": marker,
        "steps": steps,
        "config_problems": ctx.config_problems,
    }
    if as_json:
        import json

        _emit(json.dumps(doc, indent=2, sort_keys=True))
        return code
    lines = ["azure-firstboot %s" % __version__,
             "status:       %s: %s" % (WORDS[code], detail),
             "VM id:        %s" % (vm_id or "unknown (%s)" % ident.problem),
             "on Azure:     %s%s" % ("yes" if ident.on_azure else "no",
                                     " (assume_azure = yes)" if doc["assume_azure"] else ""),
             "provisioned:  %s" % ("yes: Ready reported for incarnation %s at %s" % (
                 marker.get("incarnation"), marker.get("time")) if marker else "no")]
    for step in st.STEPS:
        entry = steps[step]
        if entry is None:
            text = "not run for this VM"
        else:
            extra = entry.get("reason") or ", ".join(
                "%s=%s" % (k, entry[k]) for k in ("endpoint", "hostname", "user", "keys", "incarnation", "published")
                if entry.get(k))
            text = "%s at %s%s" % (entry.get("result"), entry.get("time"), ": " + extra if extra else "")
        lines.append("%-13s %s" % (step + ":", text))
    for problem in ctx.config_problems:
        lines.append("config:       %s" % problem)
    _emit("\n".join(lines))
    return code


# What would also provision (or fight over) a VM made from this image.
OTHER_AGENTS = (
    ("waagent", ("/usr/sbin/waagent", "/usr/bin/waagent"),
     ("walinuxagent.service", "waagent.service"),
     "apt purge waagent / dnf remove WALinuxAgent", None),
    ("cloud-init", ("/usr/bin/cloud-init",),
     ("cloud-init-local.service", "cloud-init.service", "cloud-config.service", "cloud-final.service"),
     "apt purge cloud-init / dnf remove cloud-init", "/etc/cloud/cloud-init.disabled"),
)
def ask(question):
    """Ask on the terminal; True only for an explicit yes."""
    import sys

    sys.stderr.write(question + " [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def _truncate(path):
    """Empty a file that has content (an empty one is already generalized)."""
    try:
        return [("truncate", path)] if os.path.getsize(path) > 0 else []
    except OSError:
        return []


def _entries(paths, directory, pattern):
    """Real paths of the entries of ``directory`` (resolved inside the root)
    whose names match ``pattern`` (dot files too), sorted."""
    base = paths(directory)
    try:
        names = os.listdir(base)
    except OSError:
        return []
    return [os.path.join(base, name) for name in sorted(names) if fnmatch.fnmatchcase(name, pattern)]


def _created_accounts(paths):
    """Accounts the user step created (its record), still carrying its comment:
    [(name, home)]."""
    from azure_firstboot import accounts

    record = st.read_record(paths.state("user.accounts")) or {}
    names = record.get("created", "").split()
    found = []
    for line in (st.read_text(paths("/etc/passwd"), 16 << 20) or "").splitlines():
        fields = line.split(":")
        if len(fields) >= 7 and fields[0] in names and fields[4] == accounts.COMMENT:
            found.append((fields[0], fields[5]))
    return found


def _build_user(paths, skip):
    """The account that ran this command through sudo on the machine itself
    (SUDO_USER: Packer's or your SSH user on the build VM), when it is an
    ordinary account (UID_MIN..UID_MAX): [(name, home)] or []."""
    return build_user(paths, skip)[0]


def build_user(paths, skip):
    """-> ([(name, home)] or [], why not: one line or None)."""
    from azure_firstboot import accounts

    name = os.environ.get("SUDO_USER", "")
    if not paths.is_host:
        return [], ("not looked for under --root (no sudo session tells which account built the "
                    "image); remove it with 'userdel --root DIR --remove NAME'")
    if not name:
        return [], ("cannot tell which account is the build user: SUDO_USER is not set (a root login "
                    "or 'sudo su -'); run 'sudo azure-firstboot deprovision --user' as the build user, "
                    "or remove it with 'userdel --remove NAME'")
    if name in skip:
        return [], None
    if name == "root":
        return [], "SUDO_USER is root: no build user to remove"
    low, high = accounts.uid_range(st.read_text(paths("/etc/login.defs")))
    for line in (st.read_text(paths("/etc/passwd"), 16 << 20) or "").splitlines():
        fields = line.split(":")
        if len(fields) >= 7 and fields[0] == name and accounts.id_number(fields[2]) is not None:
            if low <= accounts.id_number(fields[2]) <= high:
                return [(name, fields[5])], None
            return [], "SUDO_USER %s is not an ordinary account (UID %s outside %d..%d): kept" % (
                accounts.shown(name), fields[2], low, high)
    return [], "SUDO_USER %s is not in /etc/passwd: no build user to remove" % accounts.shown(name)


# check.py's checks that deprovision does not fix itself: listed before it starts
NOT_FIXED = ("config", "units", "agents", "network", "sshd")


def deprovision(ctx, dry_run, machine_id, ssh_host_keys, hostname, leases, force=True, user=False,
                proceed=False):
    """Remove this package's state and the selected parts of the machine's
    identity.  Unless ``force``, list what goes and ask first.

    Every path is resolved inside ``--root`` (state.Paths), so a symlinked
    directory in the tree cannot lead the removal out of it; on the running
    host the directories are used as they are.  Either way an entry that is
    a symlink is removed itself, never followed, and a real subdirectory is
    removed without following the symlinks inside it.  ``user``: also the
    admin user the user step created (userdel --remove), the sudoers file
    and the sshd drop-in, and on the machine itself the ordinary account that
    ran this through sudo (the build user).

    First it runs check.py's checks: a broken configuration refuses (nothing
    changed) unless ``proceed``; the other problems it does not fix are
    warnings.  cloud-init's and waagent's sudoers files always go."""
    from azure_firstboot import check

    paths = ctx.paths
    snap = check.gather(paths, ctx.config_problems, os.environ.get("SUDO_USER"))
    for name, text in check.problems(snap):
        if name == "config":
            continue  # cli.py has logged each one
        if name in NOT_FIXED:
            log.warning("deprovision: " + text)
    if ctx.config_problems and not proceed:
        log.error("deprovision: the configuration is broken: every VM made from this image would report "
                  "ProvisioningFailed; fix it (or --force)%s" % (
                      "" if dry_run else "; nothing changed"))
        if not dry_run:
            return 1
    actions = []
    if user:
        from azure_firstboot import accounts

        created = _created_accounts(paths)
        actions += [("userdel", name, home) for name, home in created]
        builder, why = build_user(paths, [n for n, _ in created])
        actions += [("userdel", name, home) for name, home in builder]
        if builder:
            log.info("build user: %s (ran this through sudo)" % builder[0][0])
        elif why:
            log.warning("deprovision --user: build user " + why)
        for path in (accounts.SUDOERS_FILE, accounts.SSHD_DROPIN):
            if os.path.lexists(paths(path)):
                actions.append(("remove", paths(path)))
    for path in check.FOREIGN_SUDOERS:
        if path != check.accounts.SUDOERS_FILE and os.path.lexists(paths(path)):
            actions.append(("remove", paths(path)))
    for directory in (st.STATE_DIR, st.RUN_DIR):
        actions += [("remove", p) for p in _entries(paths, directory, "*")]
    if machine_id:
        actions += _truncate(paths("/etc/machine-id"))
        dbus = paths("/var/lib/dbus/machine-id")
        if os.path.isfile(dbus) and not os.path.islink(dbus):
            actions.append(("remove", dbus))
    if ssh_host_keys:
        actions += [("remove", p) for p in _entries(paths, "/etc/ssh", "ssh_host_*key*")]
    if hostname:
        actions += _truncate(paths("/etc/hostname"))
    if leases:
        for directory, pattern in (("/var/lib/dhcp", "*.leases"), ("/var/lib/dhclient", "*.lease*"),
                                   ("/var/lib/NetworkManager", "*.lease"),
                                   ("/run/systemd/netif/leases", "*")):
            actions += [("remove", p) for p in _entries(paths, directory, pattern)]
    if not actions:
        log.info("nothing to remove")
        _still(paths)
        return 1 if ctx.config_problems and not proceed else 0
    if not dry_run and not force:
        for verb, path, *_ in actions:
            log.info("will %s %s" % (verb, path))
        if not ask("Deprovision %s: remove these %d item(s)?" % (
                "this machine" if paths.is_host else paths.root, len(actions))):
            log.error("deprovision: cancelled, nothing changed")
            return 1
    failed = 0
    for verb, path, *home in actions:
        if verb == "userdel":
            if dry_run:
                log.info("would remove the admin user %s and its home %s" % (path, home[0]))
                continue
            from azure_firstboot import commands

            root = [] if paths.is_host else ["--root", os.path.abspath(paths.root)]
            # --force: the build user is usually still logged in (this very session)
            ok, output = commands.run(["userdel"] + root + ["--force", "--remove", path], timeout=60)
            if not ok and os.path.lexists(paths(home[0])):
                log.error("cannot remove the admin user %s: %s" % (path, output))
                failed += 1
                continue
            log.info("removed the admin user %s and its home %s%s" % (
                path, home[0], "" if ok else " (userdel: %s)" % output))
            continue
        if dry_run:
            log.info("would %s %s" % (verb, path))
            continue
        try:
            if verb == "truncate":
                if not os.path.lexists(path):
                    continue
                st.write_atomic(path, b"")
            elif os.path.isdir(path) and not os.path.islink(path):
                import shutil

                shutil.rmtree(path)
            else:
                os.unlink(path)
        except OSError as exc:
            log.error("cannot %s %s: %s" % (verb, path, exc.strerror))
            failed += 1
            continue
        log.info("%s %s" % ("removed" if verb == "remove" else "truncated", path))
    if dry_run:
        return 1 if failed or (ctx.config_problems and not proceed) else 0
    _still(paths)
    return 1 if failed else 0


def _still(paths):
    """Warn about what check.py still finds that deprovision is meant to fix
    (a build user it could not tell, keys of another account)."""
    from azure_firstboot import check

    for name, text in check.problems(check.gather(paths, (), os.environ.get("SUDO_USER"))):
        if name not in NOT_FIXED:
            log.warning("deprovision: still: " + text)

"""Unit 4, user: the admin user and SSH keys the VM was created with.

IMDS compute.osProfile.adminUsername, compute.publicKeys[] and
disablePasswordAuthentication -> validated (all of it, before anything is
created) -> account (useradd / usermod), password (only when password logins
were asked for: ovf-env.xml on the provisioning medium, through chpasswd's
standard input), authorized_keys, sudoers rule, sshd drop-in, custom data
(ovf-env.xml CustomData and IMDS userData, decoded, into the state
directory; never executed); then the medium is ejected.  A failure is
recorded for report-ready, which reports ProvisioningFailed with the reason.

The medium is read without mounting it (medium.py parses UDF / ISO 9660
from the block device).  With --root every command gets --root DIR and every
file is DIR's; the medium is an image file DIR/dev/sr* (never ejected).

Path: this file -> accounts (pure: values, validation, file texts) ->
transport (IMDS) / medium (the provisioning medium) / commands.run (commands,
argument lists, never a shell).
"""

import os
import stat

from azure_firstboot import accounts, commands, creation, log, medium, protocol, selinux, sshd_reload, transport
from azure_firstboot import state as st

STEP = "user"
MEDIA_WAIT = medium.MEDIA_WAIT  # seconds to wait for a drive when a password is needed
FILE_MAX = 1024 * 1024
CUSTOM_DATA = "custom-data"     # ovf-env.xml CustomData, decoded, in the state directory
USER_DATA = "user-data"         # IMDS compute.userData, decoded
OVF_RECORD = "ovf-env"          # in the run directory: ovf-env.xml without its secrets
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


class Failure(Exception):
    """The step fails with this one-line reason."""


class Skipped(Exception):
    """The step has nothing to do (a specialized VM); the reason is one line."""


def run(ctx):
    state = ctx.state
    if not ctx.config[("user", "enabled")]:
        state.record(STEP, "skipped", reason="user.enabled = no")
        log.info("admin user management is disabled in the configuration")
        return 0
    _READ[:] = []
    try:
        details = provision(ctx)
    except Skipped as exc:
        _eject_read()
        state.record(STEP, "skipped", reason=str(exc))
        log.info("admin user left alone: %s" % exc)
        return 0
    except Failure as exc:
        reason = str(exc)
    except OSError as exc:
        reason = "%s%s" % (exc.strerror or exc, " (%s)" % exc.filename if exc.filename else "")
    else:
        _eject_read()
        state.record(STEP, "ok", **details)
        return 0
    _eject_read()
    state.record(STEP, "failed", reason=reason)
    log.error(reason)
    return 1


def _imds_document(ctx):
    """(the IMDS instance document, None), or (None, what went wrong) when
    IMDS did not answer within [imds] timeout, or answered 400 (an IMDS that
    does not know our api-version): then ovf-env.xml is the source."""
    try:
        body = transport.imds_instance(ctx.config[("imds", "endpoint")], ctx.config[("imds", "timeout")])
    except (transport.DeadlineExceeded, transport.ImdsAnswer) as exc:
        if isinstance(exc, transport.ImdsAnswer) and exc.status != 400:
            raise Failure("cannot get the admin user from IMDS: %s" % exc)
        # no answer in time, or 400: an IMDS that does not know our api-version
        return None, str(exc)
    except transport.TransportError as exc:
        raise Failure("cannot get the admin user from IMDS: %s" % exc)
    try:
        return protocol.parse_imds_document(body), None
    except protocol.ProtocolError as exc:
        raise Failure("cannot get the admin user from IMDS: %s" % exc)


def _identity(ctx):
    """Gather (IMDS; ovf-env.xml from the medium) and decide (creation):
    -> (AdminSpec, IMDS document or None, (OvfEnv or None, device, why)).
    Skipped for a specialized VM; Failure for a pre-provisioned one, or
    when no source names the admin user.  IMDS is the source; ovf-env.xml
    only when IMDS is unavailable (disagreements are logged)."""
    paths = ctx.paths
    doc, imds_problem = _imds_document(ctx)
    ovf, device, why = _read_medium(paths, MEDIA_WAIT if doc is None else 0.0)
    if doc is None:
        if ovf is None:  # one line says both
            raise Failure("cannot get the admin user: IMDS unavailable (%s) and no provisioning "
                          "medium with ovf-env.xml (%s)" % (imds_problem, why))
        log.warning("IMDS unavailable (%s): the admin user comes from ovf-env.xml" % imds_problem)
        # the hostname step may still need the medium: the platform ejects it after Ready
        _READ[:] = []
    for attempt in (0, 1):
        try:
            how, why_mode = creation.mode(doc, ovf)
        except creation.Refused as exc:
            raise Failure(str(exc))
        if how == creation.SPECIALIZED:
            raise Skipped(why_mode)
        try:
            spec, _source, notes = creation.admin(doc, ovf)
        except ValueError as exc:
            raise Failure(str(exc))
        if attempt or ovf is not None or not spec.password_auth:
            break
        # a password is wanted: give a late drive its time
        ovf, device, why = _read_medium(paths, MEDIA_WAIT)
    for note in notes:
        log.warning(note)
    if doc is not None and ovf is not None:
        for note in creation.computer_name_notes(doc, ovf):
            log.warning(note)
    return spec, doc, (ovf, device, why)


def provision(ctx):
    """The whole step; returns the details to record, raises Failure (or
    Skipped)."""
    paths = ctx.paths
    spec, doc, (ovf, device, why) = _identity(ctx)
    compute = doc["compute"] if doc is not None else None
    name = spec.username
    problem = accounts.username_problem(name)
    if problem:
        raise Failure(problem)
    existing = _passwd(paths).get(name)
    uid_min, uid_max = accounts.uid_range(st.read_text(paths("/etc/login.defs")))
    if existing and not uid_min <= existing[0] <= uid_max:
        raise Failure("admin user name %r is an existing system account (UID %d, outside "
                      "UID_MIN..UID_MAX %d..%d of /etc/login.defs); refused" % (
                          name, existing[0], uid_min, uid_max))
    home = existing[2] if existing else accounts.default_home(
        st.read_text(paths("/etc/default/useradd")), name)
    by_path = {}
    for number, (data, path) in enumerate(spec.keys):
        try:
            line = accounts.parse_key(data)
        except ValueError as exc:
            raise Failure("%s: %s" % (_key_origin(doc, number), exc))
        problem = accounts.key_path_problem(path, name, home)
        if problem:
            raise Failure("%s: %s" % (_key_origin(doc, number), problem))
        by_path.setdefault(accounts.KEYS_FILE, []).append(line)
    groups = _groups(ctx)
    password = _medium_password(ovf, device or why, name) if spec.password_auth else None
    custom = _custom_data(ovf, compute)
    if not by_path and password is None:
        raise Failure("admin user %s has no SSH key and no password%s: nobody could log in" % (
            name, " (password logins were asked for, but no provisioning medium carried one)"
            if spec.password_auth else ""))

    sshd_plan = _sshd_plan(paths, spec.password_auth)

    # ---- everything is valid: act
    root = [] if paths.is_host else ["--root", os.path.abspath(paths.root)]
    _reconcile_created(paths)
    if existing is None:
        # "*": no password matches, yet the account is not locked (see accounts.NO_PASSWORD)
        argv = ["useradd"] + root + ["--create-home", "--comment", accounts.COMMENT,
                                     "--password", accounts.NO_PASSWORD]
        if groups:
            argv += ["--groups", ",".join(groups)]
        # the intent before the effect: killed after useradd, deprovision --user
        # still knows the account (and a later run drops it if useradd never ran)
        _remember_created(paths, name)
        try:
            _command(argv + [name], "create the admin user %s" % name)
        except Failure:
            if name not in _passwd(paths):
                _remember_created(paths, name, add=False)
            raise
        log.info("created the admin user %s" % name)
    elif groups:
        _command(["usermod"] + root + ["--append", "--groups", ",".join(groups), name],
                 "add %s to %s" % (name, ",".join(groups)))
    if password is not None:
        ok, output = commands.run(["chpasswd"] + root, stdin=("%s:%s\n" % (name, password)).encode("utf-8"))
        if not ok:
            raise Failure("cannot set the password of %s: chpasswd: %s" % (
                name, output.replace(password, "<password>")))
        log.info("password of %s set from ovf-env.xml" % name)
    entry = _passwd(paths).get(name)
    if entry is None:
        raise Failure("admin user %s is not in %s after useradd" % (name, paths("/etc/passwd")))
    uid, gid, home = entry[0], entry[1], entry[2]
    _repair_home(paths, name, uid, gid, home)
    added = 0
    for rel in sorted(by_path):
        added += _write_keys(paths, home, rel, uid, gid, by_path[rel])
    problem = selinux.relabel(paths, home, sorted(by_path))[1]  # nothing without SELinux
    if problem:
        raise Failure(problem)
    sudo = _sudoers(ctx, name, nopasswd=password is None)
    sshd = _sshd(paths, spec.password_auth, sshd_plan)
    custom_shown = _write_custom_data(paths, custom)
    details = dict(user=name, uid=uid, created="no" if existing else "yes",
                   groups=",".join(groups) or "none", keys=sum(len(v) for v in by_path.values()),
                   keys_added=added, password="set" if password is not None else "none",
                   sudo=sudo, sshd=sshd, medium=device or "none", custom_data=custom_shown)
    log.info("admin user %s %s (UID %d): %d SSH key(s), %d new; password %s; sudo: %s; sshd: %s" % (
        name, "kept" if existing else "created", uid, details["keys"], added, details["password"],
        sudo, sshd))
    return details


def _key_origin(doc, number):
    return ("IMDS compute.publicKeys[%d]" % number if doc is not None
            else "ovf-env.xml SSH PublicKey %d" % number)


def _passwd(paths):
    return accounts.passwd_entries(st.read_text(paths("/etc/passwd"), 16 * FILE_MAX) or "")


def _groups(ctx):
    try:
        wanted = accounts.parse_groups(ctx.config[("user", "groups")])
    except ValueError as exc:
        raise Failure("[user] groups: %s" % exc)
    have = accounts.group_names(st.read_text(ctx.paths("/etc/group"), 16 * FILE_MAX) or "")
    missing = [g for g in wanted if g not in have]
    if missing:
        log.warning("[user] groups: no such group %s; not added" % ", ".join(missing))
    return [g for g in wanted if g in have]


def _command(argv, what):
    ok, output = commands.run(argv, timeout=60)
    if not ok:
        raise Failure("cannot %s: %s" % (what, output or "%s failed" % argv[0]))


def _created(paths):
    record = st.read_record(paths.state("user.accounts")) or {}
    return set(record.get("created", "").split())


def _remember_created(paths, name, add=True):
    """Accounts this agent created (or is about to create: written before
    useradd), for ``deprovision --user``, which removes only those that
    exist and carry our comment."""
    names = _created(paths)
    names = names | {name} if add else names - {name}
    st.write_record(paths.state("user.accounts"), {"created": " ".join(sorted(names))})


def _repair_home(paths, name, uid, gid, home):
    """An account of ours without its home: an earlier run was killed inside
    useradd, after the account and before the home.  Make the home (0700,
    the user's; no skeleton files) so the keys can go in."""
    if _home_exists(paths, home) or name not in _created(paths):
        return
    try:
        os.mkdir(paths(home), 0o700)
        os.chown(paths(home), uid, gid)
    except OSError as exc:
        raise Failure("cannot make the missing home %s of the admin user: %s" % (home, _why(exc)))
    log.warning("the home %s of %s was missing (an earlier run was interrupted); made it" % (home, name))


def _home_exists(paths, home):
    return os.path.lexists(paths(home))


def _reconcile_created(paths):
    """After a crash between the record and useradd: a recorded account
    that does not exist is dropped; one that exists stays ours."""
    names = _created(paths)
    if not names:
        return
    have = _passwd(paths)
    gone = sorted(n for n in names if n not in have)
    if gone:
        log.info("dropping %s from the accounts this agent created: not in /etc/passwd "
                 "(useradd never ran)" % " ".join(gone))
        st.write_record(paths.state("user.accounts"), {"created": " ".join(sorted(names - set(gone)))})


# --------------------------------------------------------------- authorized_keys

def _write_keys(paths, home, rel, uid, gid, keys):
    """Merge ``keys`` into home/rel; every directory below the home is opened
    with O_NOFOLLOW relative to its parent, so a symbolic link planted in the
    home is refused, never followed.  Directories it creates, and the user's
    own ~/.ssh, belong to the user with mode 0700; any other existing
    directory keeps its owner and mode.  The key file is a file of ours
    (state.open_own: regular, one link), merged on bytes (lines that are not
    UTF-8 are kept byte for byte) and replaced atomically.  Returns the
    number of keys added."""
    shown = home.rstrip("/") + "/" + rel
    parts = rel.split("/")
    try:
        fd = os.open(paths(home), _DIR_FLAGS)
    except OSError as exc:
        raise Failure("cannot open the home %s of the admin user: %s" % (home, _why(exc)))
    try:
        for depth, part in enumerate(parts[:-1]):
            created = False
            try:
                sub = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(part, 0o700, dir_fd=fd)
                created = True
                sub = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise Failure("cannot use %s for %s: %s" % (part, shown, _why(exc, part, fd)))
            os.close(fd)
            fd = sub
            if created or (depth == 0 and part == ".ssh"):
                # ~/.ssh (and what we made): the user's, 0700, as sshd's StrictModes wants
                os.fchown(fd, uid, gid)
                os.fchmod(fd, 0o700)
        name = parts[-1]
        try:
            kfd = st.open_own(name, dir_fd=fd, shown=shown)
        except OSError as exc:
            raise Failure("%s: %s; not touched" % (shown, exc.strerror or exc))
        existing = b""
        if kfd is not None:
            try:
                existing = st.read_fd(kfd, FILE_MAX)
            finally:
                os.close(kfd)
            if len(existing) > FILE_MAX:  # never rewrite it with keys cut off
                raise Failure("%s is larger than %d bytes; not touched" % (shown, FILE_MAX))
        data, added = accounts.merge_keys(existing, keys)
        try:  # also when nothing was added: the user's, 0600
            st.write_atomic(name, data, mode=0o600, keep_mode=False, owner=(uid, gid),
                            dir_fd=fd, shown=shown)
        except OSError as exc:
            raise Failure("cannot write %s: %s" % (shown, exc.strerror or exc))
    finally:
        os.close(fd)
    return added


def _why(exc, name=None, dir_fd=None):
    import errno

    if exc.errno in (errno.ELOOP, errno.ENOTDIR) and name is not None:
        try:
            if stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                exc.errno = errno.ELOOP
        except OSError:
            pass
    if exc.errno == errno.ELOOP:
        return "it is a symbolic link (not followed)"
    if exc.errno == errno.ENOTDIR:
        return "not a directory"
    return exc.strerror or str(exc)


# --------------------------------------------------------------- sudo and sshd

def _sudoers(ctx, name, nopasswd):
    paths = ctx.paths
    target = paths.own(accounts.SUDOERS_FILE)
    if not ctx.config[("user", "sudo")]:
        if os.path.lexists(target):
            try:
                os.unlink(target)
            except OSError as exc:
                raise Failure("cannot remove %s (user.sudo = no): %s" % (target, _why(exc)))
            return "off (user.sudo = no; removed %s)" % accounts.SUDOERS_FILE
        return "off (user.sudo = no)"
    directory = os.path.dirname(target)
    if not os.path.isdir(directory) or os.path.islink(directory):
        log.warning("no %s (sudo not installed?): no sudo rule for %s" % (
            os.path.dirname(accounts.SUDOERS_FILE), name))
        return "no %s" % os.path.dirname(accounts.SUDOERS_FILE)
    visudo = commands.which("visudo")

    def check(tmp):
        # the temporary file's name holds a '.': sudo ignores it until the rename
        ok, output = commands.run([visudo, "-c", "-q", "-f", tmp])
        if not ok:
            raise Failure("visudo refused the sudoers rule for %s: %s" % (
                name, output.replace(tmp, target)))

    try:
        st.write_atomic(target, accounts.sudoers_text(name, nopasswd), mode=0o440,
                        keep_mode=False, check=check if visudo else None)
    except OSError as exc:
        raise Failure("cannot write the sudoers rule: %s" % st.describe(exc))
    return "%s%s%s" % (accounts.SUDOERS_FILE, " NOPASSWD" if nopasswd else "",
                       "" if visudo else " (no visudo to check it)")


def _sshd_plan(paths, password_auth):
    """Before anything is changed: (drop-in text or None, what to record
    when nothing is written, whether the drop-in decides).  Failure when the
    setting asked for would not take effect (sshd.verdict on the effective
    order of sshd_config)."""
    from azure_firstboot import sshd

    config = st.read_text(paths(accounts.SSHD_CONFIG), FILE_MAX)
    setting = "PasswordAuthentication %s" % ("yes" if password_auth else "no")
    if config is None:
        return None, "no %s" % accounts.SSHD_CONFIG, False
    text = accounts.sshd_dropin_text(password_auth)
    order = _sshd_order(paths, config, text)
    failure, ours, notes = sshd.verdict(order, accounts.SSHD_DROPIN, password_auth)
    for note in notes:
        log.warning("sshd: %s" % note)
    if failure:
        raise Failure(failure)
    if accounts.SSHD_DROPIN not in order.read:
        log.warning("sshd does not read %s (%s includes no such file): %s not set (left alone)" % (
            accounts.SSHD_DROPIN, accounts.SSHD_CONFIG, setting))
        return None, "left alone (%s is not included)" % accounts.SSHD_DROPIN, False
    return text, None, ours


def _sshd(paths, password_auth, plan):
    """Write the drop-in the plan says sshd reads; reload sshd."""
    text, note, ours = plan
    if text is None:
        return note
    setting = "PasswordAuthentication %s" % ("yes" if password_auth else "no")
    where = "%s in %s%s" % (setting, accounts.SSHD_DROPIN, "" if ours else " (decided earlier)")
    dropin = paths.own(accounts.SSHD_DROPIN)
    if st.read_text(dropin, FILE_MAX, own=True) == text:
        return where + " (unchanged)"
    st.write_atomic(dropin, text)
    if not paths.is_host:
        return where
    return "%s; %s" % (where, sshd_reload.reload_sshd())


def _sshd_order(paths, config, dropin_text):
    """sshd.resolve on the files of the tree as they will be with the
    drop-in written."""
    import errno

    from azure_firstboot import sshd

    def read(path):
        try:
            return st.read_text(paths(path), sshd.MAX_SIZE)
        except OSError as exc:
            return None if exc.errno in (errno.ENOENT, errno.ENOTDIR) else sshd.Unreadable(st.describe(exc))

    def listdir(path):
        try:
            names = os.listdir(paths(path))
        except OSError:
            names = None
        if path == accounts.SSHD_DROPIN_DIR:
            names = sorted(set(names or ()) | {os.path.basename(accounts.SSHD_DROPIN)})
        return names

    return sshd.resolve({sshd.MAIN: config, accounts.SSHD_DROPIN: dropin_text}, read, listdir,
                        ("passwordauthentication", "kbdinteractiveauthentication"))


# --------------------------------------------------------------- the medium

_READ = []   # devices this run read ovf-env.xml from: ejected when the step ends


def _read_medium(paths, wait):
    """(OvfEnv, device, '') from the provisioning medium, or (None, None,
    why) when there is none (logged); Failure for an ovf-env.xml that cannot
    be parsed."""
    data, device, why = medium.read_ovf_env(paths, wait)
    if data is None:
        log.info("no ovf-env.xml on a provisioning medium: %s" % why)
        return None, None, why
    _READ.append(device)
    try:
        ovf = accounts.parse_ovf_env(data)
    except ValueError as exc:
        raise Failure("%s on %s" % (exc, device))
    log.info("read ovf-env.xml (%d bytes) from %s" % (len(data), device))
    _remember_ovf(paths, ovf, device)
    return ovf, device, ""


def _remember_ovf(paths, ovf, device):
    """/run/azure-firstboot/ovf-env: what ovf-env.xml said, minus the password
    and the custom data, for this boot's other steps (the medium is ejected
    when this step ends, and only this unit may open the drive)."""
    flag = {True: "true", False: "false", None: ""}
    st.write_record(paths.run(OVF_RECORD), {
        "device": device, "hostname": ovf.hostname or "", "username": ovf.username or "",
        "password": "set" if ovf.password else "none",
        "disable_ssh_password_auth": flag[ovf.disable_ssh_password_auth],
        "keys": len(ovf.keys), "custom_data": "set" if ovf.custom_data else "none",
        "preprovisioned": flag[ovf.preprovisioned],
        "preprovisioned_type": ovf.preprovisioned_type or "",
    }, durable=False)


def _eject_read():
    for device in _READ:
        what = medium.eject(device)
        if what.startswith("ejected"):
            log.info("provisioning medium: %s" % what)
        elif "image file" in what:
            log.info("provisioning medium: %s" % what)
        else:
            log.warning("provisioning medium: %s" % what)
    _READ[:] = []


def _medium_password(ovf, device, name):
    """The UserPassword of ovf-env.xml; Failure when there is none (Ready
    only when true: password logins were asked for) or it is unusable.  ``device``: where it came from,
    or why there is no medium."""
    if ovf is None:
        raise Failure("password logins were asked for (disablePasswordAuthentication false), but no "
                      "provisioning medium with ovf-env.xml was found (%s): no password could be set"
                      % device)
    password = ovf.password
    if not password:
        raise Failure("password logins were asked for (disablePasswordAuthentication false), but "
                      "ovf-env.xml on %s carries no UserPassword: no password could be set" % device)
    problem = accounts.password_problem(password)
    if problem:
        raise Failure(problem)
    return password


def _custom_data(ovf, compute):
    """{file name: bytes or None}: CustomData of ovf-env.xml and IMDS
    compute.userData, decoded (None: none given); Failure when userData is
    not base64."""
    user_data = None
    text = compute.get("userData") if isinstance(compute, dict) else None
    if isinstance(text, str) and text.strip():
        try:
            user_data = accounts.decode_base64(text, "IMDS compute.userData")
        except ValueError as exc:
            raise Failure(str(exc))
    return {CUSTOM_DATA: ovf.custom_data if ovf is not None else None, USER_DATA: user_data or None}


def _write_custom_data(paths, custom):
    """Write (0600, atomically) or remove each custom data file; never run."""
    shown = []
    for name in (CUSTOM_DATA, USER_DATA):
        path = paths.state(name)
        data = custom.get(name)
        if data:
            # 0600 whatever was there; a link, FIFO or socket in the way is
            # replaced by the rename, a directory refused (state.write_atomic)
            st.write_atomic(path, data, mode=0o600, keep_mode=False, replace=True)
            shown.append("%s %d bytes" % (name, len(data)))
            continue
        try:
            os.unlink(path)  # never followed; a directory in the way is an error naming it
        except FileNotFoundError:
            pass
    if shown:
        log.info("custom data written to %s: %s (not executed)" % (st.STATE_DIR, ", ".join(shown)))
    return ", ".join(shown) or "none"

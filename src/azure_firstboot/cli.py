"""Command line: ``azure-firstboot [--config FILE] [--root DIR] COMMAND``.

Argument parsing is done by hand: argparse costs a noticeable import on
every boot, and the grammar is small.  Exit codes: 0 success or nothing to
do, 1 the step failed, 2 bad command line or configuration.
"""

import sys

from azure_firstboot import __version__, config, identity, log
from azure_firstboot.state import Paths, State

USAGE = """\
usage: azure-firstboot [--config FILE] [--root DIR] COMMAND [OPTIONS]

First-boot provisioning for Azure Linux images without walinuxagent or cloud-init.

commands:
  network-wait   wait (bounded) until the WireServer accepts connections
  hostname       set the host name from IMDS osProfile.computerName, publish it via DHCP
  user           create the admin user from IMDS osProfile.adminUsername, install its SSH keys
  report-ready   report Ready (or ProvisioningFailed) to the WireServer
  resource-disk  format (only when pristine) and mount the resource disk, swap file
                 [--dry-run]; every boot, not a provisioning step
  status         show what was done for this VM  [--json] [--wait [--timeout S]]
  deprovision    generalize before capturing an image: remove this agent's state, the
                 machine id, SSH host keys, host name and DHCP leases (name some of
                 --machine-id --ssh-host-keys --hostname --leases to remove only those)
                 [--dry-run] [--all] [--yes|-y] [--force]; asks on a terminal unless
                 --yes; refuses while 'check' finds a problem it cannot fix, unless
                 --force; --user (or --all) also removes the admin user the user step
                 created and the account that ran it through sudo (the build user)
  check          is this system (or --root DIR) ready to be captured as an image?
                 one line per problem, exit 0 when none  [--json]

options:
  --config FILE  configuration file (default %s under --root;
                 a missing default file means the built-in defaults, a named FILE must exist)
  --root DIR     act on the system tree under DIR (image builders, tests): files only,
                 nothing on the running host changes
  --version      print the version
  -h, --help     show this help; 'azure-firstboot COMMAND --help' shows a command's

Each step acts once per VM (keyed on the SMBIOS VM id) and only on Azure.
Exit status: 0 done or nothing to do, 1 the step failed, 2 usage or configuration error
('status' has its own codes: see 'azure-firstboot status --help').
""" % config.DEFAULT_PATH

HELP = {
    "network-wait": """\
usage: azure-firstboot network-wait

Wait, up to [provisioning] network_timeout, until the WireServer accepts a TCP
connection; its address is [wireserver] endpoint, else DHCP option 245 from a
lease, else 168.63.129.16.  Records the address for report-ready.  On a VM
already provisioned it only writes /run/azure-firstboot/provisioned.
Exit status: 0 reachable or nothing to do, 1 not reachable in time,
2 usage or configuration error (after doing its work).
""",
    "hostname": """\
usage: azure-firstboot hostname

Set the host name from IMDS compute.osProfile.computerName (validated;
/etc/hostname, the 127.0.1.1 line of /etc/hosts, the kernel) and, with
[hostname] publish, publish it to Azure DNS through the DHCP client.
A failure is recorded for report-ready, which reports it to Azure.
Exit status: 0 done, disabled or nothing to do, 1 failed, 2 usage or
configuration error (a broken configuration: nothing is changed).
""",
    "user": """\
usage: azure-firstboot user

Create the admin user named by IMDS compute.osProfile.adminUsername and
install its SSH public keys ([user] enabled, groups, sudo).  It fails when
password logins were asked for and no password could be set, or when an
earlier line of sshd_config defeats the PasswordAuthentication asked for.  A
failure is recorded for report-ready, which reports it to Azure.  One run at
a time: a second one waits up to 30 s for the first (as every step does).
Exit status: 0 done, disabled or nothing to do, 1 failed, 2 usage or
configuration error (a broken configuration: nothing is changed).
""",
    "report-ready": """\
usage: azure-firstboot report-ready

Fetch the goal state and report Ready to the WireServer, or
NotReady/ProvisioningFailed with the reason when a step of this boot failed or
the configuration is broken; writes the PROVISIONING_REPORT record to the
Hyper-V KVP pool /var/lib/hyperv/.kvp_pool_1 (when that directory exists)
before each report.  Writes /var/lib/azure-firstboot/provisioned only after
the WireServer acknowledged Ready.
Exit status: 0 Ready acknowledged or nothing to do, 1 failure reported or
reporting failed, 2 usage error.
""",
    "resource-disk": """\
usage: azure-firstboot resource-disk [--dry-run]

Mount the Azure resource (temporary) disk on [resource_disk] mount_point
(default /mnt), and with swap_size a swap file on it.  It is formatted
(filesystem, default ext4) only while it is the pristine volume Azure provides:
NTFS holding nothing but DATALOSS_WARNING_README.txt, or a blank NVMe local
disk.  A file system already on it is mounted; anything else is left alone.
Runs on every boot on Azure (azure-firstboot-resource-disk.service).

  --dry-run      only print what it found and would do

Exit status: 0 done or nothing to do (no resource disk, not pristine,
disabled, not on Azure), 1 a command failed, 2 usage or configuration error
(the disk is left alone).
""",
    "status": """\
usage: azure-firstboot status [--json] [--wait [--timeout S]]

Show what was done for this VM: the outcome and each step's last result.
Works for any user (the units record what it needs, without secrets, in
/run/azure-firstboot and /var/lib/azure-firstboot).

  --json         the same as a JSON document (keys "status", "exit_code", ...)
  --wait         block until the first-boot units have finished (polls the
                 state files every 0.5 s; no D-Bus)
  --timeout S    with --wait: give up after S seconds (exit 3); without it
                 --wait gives up after 1800 s; --timeout 0 waits without bound

A "started" record counts as running only while its pid is the step's own
process (its cgroup names the unit, or its command line is this command's).

Exit status:
  0  provisioned: Ready was acknowledged for this VM
  1  failed: provisioning failed in this boot (ProvisioningFailed reported, or
     reporting failed)
  2  usage error
  3  not yet: the first-boot units have not finished (or --wait gave up)
  4  not on Azure: nothing to do on this machine
  5  unknown: the state could not be read (a record that is not a regular
     file, permission denied, I/O error)
""",
    "check": """\
usage: azure-firstboot [--root DIR] check [--json]

Check that this system (or the image tree under --root DIR) is ready to be
captured as an image that provisions itself with azure-firstboot; prints one
line per problem ("CHECK: what is wrong and what to do"):

  config      the configuration file parses
  units       the azure-firstboot units are enabled
  agents      waagent and cloud-init are absent or disabled
  network     a DHCP configuration matches Azure's NIC by driver (hv_netvsc),
              not by MAC, for the image's network stack (systemd-networkd,
              NetworkManager, ifupdown, netplan); no MAC-bound configuration
  leases      no DHCP leases left
  sshd        sshd reads sshd_config.d before any PasswordAuthentication line
  machine-id  /etc/machine-id is empty
  host-keys   no SSH host keys (the ssh-keygen unit makes them at boot)
  state       no azure-firstboot state left
  sudoers     no sudoers file of cloud-init, waagent or the user step left
  build-user  no build user (SUDO_USER) and no ordinary account with SSH keys

Files only: it starts nothing, changes nothing and needs no network.

  --json         the same as a JSON document ({"ready": ..., "problems": [...]})

Exit status: 0 ready to capture, 1 problems found, 2 usage error.
""",
    "deprovision": """\
usage: azure-firstboot deprovision [--dry-run] [--yes|-y] [--force] [--all] [--user]
                                   [--machine-id] [--ssh-host-keys] [--hostname] [--leases]

Generalize this system before capturing an image.  Always removes this
agent's state (/var/lib/azure-firstboot/*, /run/azure-firstboot/*), so the
next boot provisions again.  With none of the first four parts named (or
--all) it also removes all four; naming some removes only those (and the state):

  --machine-id     empty /etc/machine-id (and remove /var/lib/dbus/machine-id)
  --ssh-host-keys  remove /etc/ssh/ssh_host_*key* (new keys are made at boot)
  --hostname       empty /etc/hostname
  --leases         remove DHCP leases: /var/lib/dhcp/*.leases,
                   /var/lib/dhclient/*.lease*, /var/lib/NetworkManager/*.lease,
                   /run/systemd/netif/leases/*
  --user           also remove the admin user the user step created and the
                   account that ran this through sudo (the build user); adds to
                   the default set (only with --user or --all, never by default)
  --all            every part above, and --user
  --dry-run        only list what would be removed or emptied
  --yes, -y        do not ask (it asks only when stdin is a terminal)
  --force          do not ask, and go on even when 'azure-firstboot check' finds
                   a problem deprovision cannot fix (a broken configuration, no
                   network configuration for Azure's NIC, another agent enabled)

It always removes the sudoers files cloud-init and waagent wrote
(/etc/sudoers.d/90-cloud-init-users, /etc/sudoers.d/waagent): a VM whose admin
has the build user's name would inherit them.  It runs the checks of
'azure-firstboot check' first and changes nothing while one it cannot fix
fails (exit 1), unless --force; afterwards it lists what still fails.

Exit status: 0 done, 1 refused or something could not be removed, 2 usage error.
""",
}

COMMANDS = ("network-wait", "hostname", "user", "report-ready", "resource-disk", "status", "deprovision",
            "check")
UNITS = ("network-wait", "hostname", "user", "report-ready")
COMMAND_FLAGS = {
    "status": ("--json", "--wait"),
    "resource-disk": ("--dry-run",),
    "deprovision": ("--dry-run", "--machine-id", "--ssh-host-keys", "--hostname", "--leases", "--user",
                    "--all", "--force", "--yes", "-y"),
    "check": ("--json",),
}
COMMAND_OPTIONS = {
    "status": ("--timeout",),
}

# deprovision's parts; none named = all of them
DEPROVISION_PARTS = ("--machine-id", "--ssh-host-keys", "--hostname", "--leases")


class UsageError(Exception):
    """A bad command line; ``command`` is the command it was for (if known)."""

    def __init__(self, message, command=None):
        Exception.__init__(self, message)
        self.command = command


class Done(Exception):
    """Stop the command now with this exit code (e.g. nothing to do); a unit
    puts ``summary`` on the console."""

    def __init__(self, code, summary=None):
        Exception.__init__(self, code)
        self.code = code
        self.summary = summary


class Context(object):
    """What every command gets: configuration (and its problems), paths,
    identity."""

    def __init__(self, cfg, paths, config_problems=()):
        self.config = cfg
        self.config_problems = list(config_problems)
        self.paths = paths
        self.identity = identity.read_identity(paths)
        self.state = None
        self.lock = None

    def config_failure(self):
        """The configuration problem to report to Azure, or None."""
        if not self.config_problems:
            return None
        more = len(self.config_problems) - 1
        return "configuration: %s%s" % (self.config_problems[0],
                                        " (and %d more)" % more if more else "")

    def start(self, step):
        """Common start of the units: act only on Azure, once per VM.  A
        broken configuration is logged (every problem, file:line); network-wait
        and report-ready go on with the values that could be read, so that the
        failure reaches Azure; the other steps change nothing."""
        ident = self.identity
        for problem in self.config_problems[:20]:
            log.error(problem)
        broken = 2 if self.config_problems else 0
        if not ident.on_azure and not self.config[("provisioning", "assume_azure")]:
            log.info("%s: not on Azure (chassis asset tag %r); nothing to do" % (step, ident.asset_tag))
            self._note_boot(None, False)
            raise Done(broken, "not on Azure; nothing to do" if step == UNITS[0] else None)
        if ident.vm_id is None:
            reason = "cannot tell which VM this is: %s" % ident.problem
            log.error("%s: %s" % (step, reason))
            raise Done(1, "%s FAILED: %s" % (step, reason))
        self._note_boot(ident.vm_id, True)
        self.state = State(self.paths, ident.vm_id)
        self._hold_step_lock(step)
        marker = self.state.provisioned()
        if marker is not None:
            if step == "network-wait":
                try:
                    self.state.set_boot_flag("provisioned", ident.vm_id)
                except OSError as exc:
                    log.warning("cannot write the boot flag: %s" % exc)
            log.info("%s: VM %s already provisioned (Ready at %s); nothing to do" % (
                step, ident.vm_id, marker.get("time")))
            raise Done(broken, "VM already provisioned; nothing to do" if step == UNITS[0] else None)
        if broken and step not in ("network-wait", "report-ready"):
            reason = self.config_failure()
            try:
                self.state.record(step, "failed", reason=reason)
            except OSError as exc:
                log.warning("cannot record the result: %s" % exc)
            raise Done(2, "%s FAILED: %s" % (step, reason))
        self.state.begin(step)  # first action: "started" (report_ready.why_not_ready)
        return self.state

    def _hold_step_lock(self, step):
        """One run of a step at a time: a second run waits (bounded) for the
        first, then goes on (and finds, e.g., the marker report-ready wrote:
        Ready is posted once), or gives up with one line, recording nothing
        (the running one's records stand).  Held until the process ends."""
        from azure_firstboot import state as st

        path = st.step_lock_path(self.paths, step)
        self.lock, holder = st.step_lock(path, st.STEP_LOCK_WAIT)
        if holder is not None:
            reason = "not run: another run of this step (pid %s) still holds %s after %d s; its result stands" % (
                holder, path, st.STEP_LOCK_WAIT)
            log.error("%s: %s" % (step, reason))
            raise Done(1, "%s %s" % (step, reason))

    def _note_boot(self, vm_id, on_azure):
        """World-readable note of what this boot is (for 'status' run by a
        user who cannot read product_uuid): the VM id, on Azure or not."""
        from azure_firstboot import state as st

        text = st.format_record({"vm_id": vm_id, "on_azure": "yes" if on_azure else "no"})
        path = self.paths.run("identity")
        try:
            if st.read_text(path, own=True) == text:
                return
        except OSError:
            return
        try:
            st.write_atomic(path, text, durable=False)
        except OSError:
            pass  # best effort (for status); the step's own records say what is wrong


def _summary(step, code, entry):
    """The one console line of a unit that ran: what it did, or why not."""
    if entry is None:
        return "%s: exited with status %d and recorded no result" % (step, code)
    result, reason = entry.get("result"), entry.get("reason")
    if step == "report-ready":
        if result == "ok":
            return "Ready reported (incarnation %s)" % entry.get("incarnation")
        prefix = "reported ProvisioningFailed: "
        if reason and reason.startswith(prefix):
            return "provisioning FAILED: %s (reported to Azure)" % reason[len(prefix):]
        return "provisioning FAILED: %s" % (reason or "unknown reason")
    if result == "ok":
        if step == "network-wait":
            return "WireServer %s reachable" % entry.get("endpoint")
        if step == "hostname":
            return "host name set to %s" % entry.get("hostname")
        if step == "user":
            return "admin user %s %s" % (entry.get("user"), "created" if entry.get("created") == "yes"
                                          else "updated")
        return "%s done" % step
    if result == "skipped":
        return "%s skipped%s" % (step, ": " + reason if reason else "")
    return "%s FAILED: %s" % (step, reason or "unknown reason")


def parse_args(argv):
    """argv -> (config path or None, root, command, set of flags, {option: value});
    UsageError (naming the command when known) if bad.  Command "help" carries
    the command asked about in the options (key "about")."""
    found = {}
    try:
        return _parse_args(argv, found)
    except UsageError as exc:
        exc.command = exc.command or found.get("command")
        raise


def _parse_args(argv, found):
    cfg_path, root, command, flags, options = None, "/", None, set(), {}
    args = list(argv)
    wants_help = False
    while args:
        arg = args.pop(0)
        name, eq, inline = arg.partition("=")
        takes_value = name in ("--config", "--root") or name in COMMAND_OPTIONS.get(command, ())
        if takes_value:
            if eq:
                value = inline
            elif args:
                value = args.pop(0)
            else:
                raise UsageError("%s needs a value" % name)
            if not value:
                raise UsageError("%s needs a non-empty value" % name)
            if name == "--config":
                cfg_path = value
            elif name == "--root":
                root = value
            else:
                options[name] = value
        elif arg in ("-h", "--help"):
            wants_help = True
        elif arg == "--version":
            return None, None, "version", set(), {}
        elif arg.startswith("-"):
            if command is None or arg not in COMMAND_FLAGS.get(command, ()):
                if wants_help:
                    continue
                raise UsageError("unknown option %s%s" % (_printable(arg), " for %s" % command if command else ""))
            flags.add(arg)
        elif command is None:
            if arg not in COMMANDS:
                raise UsageError("unknown command %r (choose from %s)" % (arg[:60], ", ".join(COMMANDS)))
            command = found["command"] = arg
        elif not wants_help:
            raise UsageError("unexpected argument %s" % _printable(arg))
    if wants_help:
        return None, None, "help", set(), {"about": command}
    if command is None:
        raise UsageError("no command given")
    if "--timeout" in options and "--wait" not in flags:
        raise UsageError("--timeout needs --wait")
    return cfg_path, root, command, flags, options


def _printable(text):
    """A command-line word in a message: as is when printable and short,
    else quoted and escaped."""
    if text.isprintable() and len(text) <= 60:
        return text
    shown = repr(text[:60])
    return shown + ("..." if len(text) > 60 else "")


def _timeout(text):
    whole, _, frac = text.partition(".")
    if not (whole or frac) or not set(whole + frac) <= set("0123456789") or len(text) > 20:
        raise UsageError("--timeout expects seconds (a number such as 60 or 2.5), got %s" % _printable(text),
                         "status")
    return float(text)


def _interactive():
    """A person at a terminal (deprovision asks them); scripts are not asked."""
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except ValueError:
        return False


def main(argv=None):
    try:
        cfg_path, root, command, flags, options = parse_args(sys.argv[1:] if argv is None else argv)
        timeout = _timeout(options["--timeout"]) if "--timeout" in options else None
    except UsageError as exc:
        log.error(str(exc))
        sys.stderr.write("Try 'azure-firstboot %s--help'.\n" % (exc.command + " " if exc.command else ""))
        return 2
    if command == "help":
        sys.stdout.write(HELP.get(options["about"], USAGE))
        return 0
    if command == "version":
        print("azure-firstboot %s" % __version__)
        return 0
    import os

    if not os.path.isdir(root):
        log.error("--root %s is not a directory" % _printable(root))
        return 2
    paths = Paths(root)
    try:
        if cfg_path is None:
            cfg, problems = config.load(paths(config.DEFAULT_PATH))
        else:
            cfg, problems = config.load(cfg_path, required=True)
    except config.ConfigError as exc:
        log.error(str(exc))
        return 2
    ctx = Context(cfg, paths, problems)
    try:
        if command in UNITS:
            return _unit(ctx, command)
        if command == "check":
            from azure_firstboot import check

            return check.run(ctx, "--json" in flags)
        if command == "resource-disk":
            from azure_firstboot import resource_disk

            return resource_disk.main(ctx, "--dry-run" in flags)
        from azure_firstboot import admin

        for problem in problems[:20]:
            log.warning(problem)
        if command == "status":
            return admin.status(ctx, "--json" in flags, "--wait" in flags, timeout)
        # No selection (or --all): everything a generalized image must lose.
        # --user adds the admin/build user to that (as waagent's -deprovision+user).
        chosen = [f for f in DEPROVISION_PARTS if f in flags]
        if not chosen or "--all" in flags:
            chosen = DEPROVISION_PARTS
        force = bool(flags & {"--force", "--yes", "-y"}) or not _interactive()
        return admin.deprovision(
            ctx, "--dry-run" in flags, "--machine-id" in chosen, "--ssh-host-keys" in chosen,
            "--hostname" in chosen, "--leases" in chosen, force=force,
            user="--user" in flags or "--all" in flags, proceed="--force" in flags)
    except OSError as exc:
        log.error("%s: %s" % (command, _os_error(exc)))
        return 5 if command == "status" else 1  # admin.UNREADABLE: the state could not be read
    except KeyboardInterrupt:
        log.error("%s: interrupted" % command)
        return 130


def _os_error(exc):
    """An OSError as one line: what, which file, and "(not root?)" only when
    permissions are the cause and we are not root."""
    import errno
    import os

    text = exc.strerror or str(exc)
    if getattr(exc, "filename", None):
        text += " (%s)" % exc.filename
    if exc.errno in (errno.EACCES, errno.EPERM) and os.geteuid() != 0:
        text += " (not root?)"
    return text


def _unit(ctx, step):
    """Run one unit; put its one summary line on the console."""
    try:
        # Before importing the unit: an already-provisioned boot stops
        # here, having loaded nothing that talks to the network.
        ctx.start(step)
        if ctx.paths.is_host:
            from azure_firstboot import state as st
            from azure_firstboot import transport

            transport.guard_requests(ctx.paths.run(st.REPUBLISH_LOCK))
        if step == "network-wait":
            from azure_firstboot import network_wait as unit
        elif step == "hostname":
            from azure_firstboot import hostname as unit
        elif step == "user":
            from azure_firstboot import user as unit
        else:
            from azure_firstboot import report_ready as unit
        code = unit.run(ctx)
    except Done as done:
        if done.summary:
            log.summary(done.summary)
        return done.code
    except OSError as exc:
        reason = _os_error(exc)
        log.error("%s: %s" % (step, reason))
        log.summary("%s FAILED: %s" % (step, reason))
        return 1
    log.summary(_summary(step, code, ctx.state.result(step, this_boot=True)))
    if code == 0 and ctx.config_problems:
        return 2
    return code

"""Command line: ``azure-firstboot [--config FILE] [--root DIR] COMMAND``.

Argument parsing is done by hand: argparse costs a noticeable import on
every boot, and the grammar is small.  Exit codes: 0 success or nothing to
do, 1 the step failed, 2 bad command line or configuration.
"""

import sys

from azure_firstboot import __version__, config, log, system
from azure_firstboot.state import Paths, State

USAGE = """\
usage: azure-firstboot [--config FILE] [--root DIR] COMMAND [OPTIONS]

First-boot provisioning for Azure Linux images without walinuxagent or cloud-init.

commands:
  network-wait   wait (bounded) until the WireServer accepts connections
  hostname       set the host name from IMDS osProfile.computerName, publish it via DHCP
  user           create the admin user from IMDS osProfile.adminUsername, install its SSH keys
  report-ready   report Ready (or ProvisioningFailed) to the WireServer
  status         show what was done for this VM  [--json]
  deprovision    generalize before capturing an image: remove this agent's state, the
                 machine id, SSH host keys, host name and DHCP leases (name some of
                 --machine-id --ssh-host-keys --hostname --leases to remove only those)
                 [--dry-run] [--all] [--force|-y]; asks on a terminal unless --force;
                 --user (or --all) also removes the admin user the user step created
                 and the account that ran it through sudo (the build user)

options:
  --config FILE  configuration file (default %s; missing = defaults)
  --root DIR     act on the system tree under DIR (image builders, tests): files only,
                 nothing on the running host changes
  --version      print the version
  -h, --help     show this help

Each step acts once per VM (keyed on the SMBIOS VM id) and only on Azure.
Exit status: 0 done or nothing to do, 1 the step failed, 2 usage or configuration error.
""" % config.DEFAULT_PATH

COMMANDS = ("network-wait", "hostname", "user", "report-ready", "status", "deprovision")
COMMAND_FLAGS = {
    "status": ("--json",),
    "deprovision": ("--dry-run", "--machine-id", "--ssh-host-keys", "--hostname", "--leases", "--user",
                    "--all", "--force", "-y"),
}

# deprovision's parts; none named = all of them
DEPROVISION_PARTS = ("--machine-id", "--ssh-host-keys", "--hostname", "--leases")


class UsageError(Exception):
    pass


class Done(Exception):
    """Stop the command now with this exit code (e.g. nothing to do)."""

    def __init__(self, code):
        Exception.__init__(self, code)
        self.code = code


class Context(object):
    """What every command gets: configuration, paths, identity."""

    def __init__(self, cfg, paths):
        self.config = cfg
        self.paths = paths
        self.identity = system.read_identity(paths)
        self.state = None

    def start(self, step):
        """Common start of the three units: act only on Azure, once per VM."""
        ident = self.identity
        if not ident.on_azure and not self.config[("provisioning", "assume_azure")]:
            log.info("%s: not on Azure (chassis asset tag %r); nothing to do" % (step, ident.asset_tag))
            raise Done(0)
        if ident.vm_id is None:
            log.error("%s: cannot tell which VM this is: %s" % (step, ident.problem))
            raise Done(1)
        self.state = State(self.paths, ident.vm_id)
        marker = self.state.provisioned()
        if marker is not None:
            if step == "network-wait":
                try:
                    self.state.set_boot_flag("provisioned", ident.vm_id)
                except OSError as exc:
                    log.warning("cannot write the boot flag: %s" % exc)
            log.info("%s: VM %s already provisioned (Ready at %s); nothing to do" % (
                step, ident.vm_id, marker.get("time")))
            raise Done(0)
        self.state.begin(step)  # first action: "started" (report_ready.why_not_ready)
        return self.state


def parse_args(argv):
    """argv -> (config path, root, command, set of flags); UsageError if bad."""
    cfg_path, root, command, flags = config.DEFAULT_PATH, "/", None, set()
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, eq, inline = arg.partition("=")
        if name in ("--config", "--root"):
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
            else:
                root = value
        elif arg in ("-h", "--help"):
            return None, None, "help", set()
        elif arg == "--version":
            return None, None, "version", set()
        elif arg.startswith("-"):
            if command is None or arg not in COMMAND_FLAGS.get(command, ()):
                raise UsageError("unknown option %s%s" % (arg, " for %s" % command if command else ""))
            flags.add(arg)
        elif command is None:
            if arg not in COMMANDS:
                raise UsageError("unknown command %r (choose from %s)" % (arg, ", ".join(COMMANDS)))
            command = arg
        else:
            raise UsageError("unexpected argument %r" % arg)
    if command is None:
        raise UsageError("no command given")
    return cfg_path, root, command, flags


def _interactive():
    """A person at a terminal (deprovision asks them); scripts are not asked."""
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except ValueError:
        return False


def main(argv=None):
    try:
        cfg_path, root, command, flags = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        sys.stderr.write("azure-firstboot: error: %s\nTry 'azure-firstboot --help'.\n" % exc)
        return 2
    if command == "help":
        sys.stdout.write(USAGE)
        return 0
    if command == "version":
        print("azure-firstboot %s" % __version__)
        return 0
    try:
        cfg = config.load(cfg_path)
    except config.ConfigError as exc:
        log.error(str(exc))
        return 2
    import os

    if not os.path.isdir(root):
        log.error("--root %s is not a directory" % root)
        return 2
    ctx = Context(cfg, Paths(root))
    try:
        if command in ("network-wait", "hostname", "user", "report-ready"):
            # Before importing the unit: an already-provisioned boot stops
            # here, having loaded nothing that talks to the network.
            ctx.start(command)
        if command == "network-wait":
            from azure_firstboot import network_wait as unit
        elif command == "hostname":
            from azure_firstboot import hostname as unit
        elif command == "user":
            from azure_firstboot import user as unit
        elif command == "report-ready":
            from azure_firstboot import report_ready as unit
        else:
            from azure_firstboot import admin

            if command == "status":
                return admin.status(ctx, "--json" in flags)
            # No selection (or --all): everything a generalized image must lose.
            # --user adds the admin/build user to that (as waagent's -deprovision+user).
            chosen = [f for f in DEPROVISION_PARTS if f in flags]
            if not chosen or "--all" in flags:
                chosen = DEPROVISION_PARTS
            force = bool(flags & {"--force", "-y"}) or not _interactive()
            return admin.deprovision(
                ctx, "--dry-run" in flags, "--machine-id" in chosen, "--ssh-host-keys" in chosen,
                "--hostname" in chosen, "--leases" in chosen, force=force,
                user="--user" in flags or "--all" in flags)
        return unit.run(ctx)
    except Done as done:
        return done.code
    except OSError as exc:
        log.error("%s: %s%s" % (command, exc.strerror or exc,
                                " (%s)" % exc.filename if getattr(exc, "filename", None) else ""))
        return 1
    except KeyboardInterrupt:
        log.error("%s: interrupted" % command)
        return 130

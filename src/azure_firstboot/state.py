"""Where things live on disk, all under one root (``--root``), and how they
are read and written: bounded reads of regular files only, atomic writes
(temporary file, fsync, rename), never half.

Records are ``key=value`` lines (one value per line, no quoting): easy to
read for people and scripts, and cheap to parse on the boot path.

State (survives reboots, keyed on the VM id):
  /var/lib/azure-firstboot/provisioned        marker, written after Ready was acknowledged
  /var/lib/azure-firstboot/<step>.result      last result of each step ("started" while it runs)
Per boot (tmpfs):
  /run/azure-firstboot/<step>.boot            this boot's record of the step: written
                                              "started" as its first action, then its result
  /run/azure-firstboot/<step>.lock            flock held while the step runs (one run at a
                                              time; holds the pid of the run that has it)
  /run/azure-firstboot/ready-posted            "VM-ID INCARNATION" Ready was acknowledged for
                                              (not posted again in this boot)
  /run/azure-firstboot/endpoint               WireServer address found by network-wait
  /run/azure-firstboot/provisioned            "this VM is already provisioned": lets the
                                              later units skip via ConditionPathExists

``--root DIR`` is a boundary: ``Paths`` resolves every path under DIR as if
DIR were ``/`` (an absolute symlink inside the tree points into the tree,
``..`` stops at DIR), so no symlink or ``..`` in the tree leads outside it.
On the running host (root ``/``) paths are used as they are.  Paths are
resolved when they are asked for: the boundary holds against what the tree
contains, not against another process rewriting the tree at the same time.

The agent's own files (records, the KVP pool, authorized_keys, the sudoers
rule, the sshd drop-in, /etc/hostname, /etc/hosts, dhclient.conf) follow one
rule, kept here (``open_own``, ``read_bytes(own=True)``, ``write_atomic``):
each is a regular file or absent; the last component is never followed
(``Paths.own`` resolves only the directories above it, then O_NOFOLLOW); a
file with more than one hard link is not read (its content would be copied
into a file of ours); reads are bounded; a FIFO, device, socket, directory or
symbolic link in its place is refused with an error that names the real path
and is never opened for writing; no temporary file survives a failure.
"""

import errno
import os
import stat
import time

STATE_DIR = "/var/lib/azure-firstboot"
RUN_DIR = "/run/azure-firstboot"
STEPS = ("network-wait", "hostname", "user", "report-ready")
# The steps that must have finished successfully in this boot before
# report-ready may report Ready (when they are enabled; see report_ready.run).
REQUIRED_BEFORE_READY = ("hostname", "user")
READY_STEP = "report-ready"

# Held exclusively by the hostname step while its DHCP restart (host name
# publishing) may take the address away; every HTTP request of ours holds it
# shared, so none is cut off by our own restart and none is in flight when it
# starts (transport.guard_requests, hostname.run).
REPUBLISH_LOCK = "republish.lock"

RECORD_LIMIT = 65536
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
MAX_SYMLINKS = 40


def _problem(code, text, path):
    return OSError(code, text, path)


class Paths(object):
    """Target-system paths -> real paths, contained in the root."""

    def __init__(self, root="/"):
        self.is_host = root in ("", "/")
        self.root = "/" if self.is_host else os.path.realpath(root)

    def __call__(self, path, final=True):
        """An absolute path as seen on the target system -> the real path.
        Under a root, symlinks are followed as a chroot would (absolute
        targets start again at the root, ``..`` never climbs above it); the
        result names no symlink in any existing component and lies inside the
        root.  Raises OSError (ELOOP) on a symlink loop.  With ``final``
        False the last component is kept as it is (see ``own``)."""
        if self.is_host:
            return path
        if not final:
            head, _, tail = path.rstrip("/").rpartition("/")
            if tail not in ("", ".", ".."):
                return os.path.join(self(head or "/"), tail)
        todo = [part for part in reversed(path.split("/")) if part not in ("", ".")]
        done = []
        hops = 0
        while todo:
            part = todo.pop()
            if part == "..":
                if done:
                    done.pop()
                continue
            candidate = os.path.join(self.root, *(done + [part]))
            try:
                info = os.lstat(candidate)
            except OSError:
                done.append(part)  # does not exist (yet): nothing to follow
                continue
            if stat.S_ISLNK(info.st_mode):
                hops += 1
                if hops > MAX_SYMLINKS:
                    raise _problem(errno.ELOOP, "too many levels of symbolic links",
                                   os.path.join(self.root, path.lstrip("/")))
                target = os.readlink(candidate)
                if target.startswith("/"):
                    done = []
                todo.extend(part for part in reversed(target.split("/")) if part not in ("", "."))
                continue
            done.append(part)
        return os.path.join(self.root, *done) if done else os.path.join(self.root, "")

    def own(self, path):
        """The real path of a file of ours: the directories above it are
        resolved inside the root, the file itself is not (a symbolic link
        there is refused by open_own and write_atomic, never followed)."""
        return self(path, final=False)

    def state(self, name):
        return self.own(STATE_DIR + "/" + name)

    def run(self, name):
        return self.own(RUN_DIR + "/" + name)


_OPEN = os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)


def _not_ours(info, path, links=True):
    """The reason an existing file (lstat ``info``) is not one of ours to
    read or replace, as an OSError naming ``path``; None when it is."""
    if stat.S_ISLNK(info.st_mode):
        return _problem(errno.ELOOP, "it is a symbolic link (not followed)", path)
    if stat.S_ISDIR(info.st_mode):
        return _problem(errno.EISDIR, "it is a directory, not a regular file", path)
    if not stat.S_ISREG(info.st_mode):
        return _problem(errno.EINVAL, "not a regular file", path)
    if links and info.st_nlink != 1:
        return _problem(errno.EMLINK, "it has %d hard links (not used)" % info.st_nlink, path)
    return None


def open_own(path, write=False, create=None, dir_fd=None, shown=None):
    """Open a file of ours: the one rule for every file the agent reads as
    its own or changes in place.  It must be a regular file with one link;
    a symbolic link in its place is never followed (O_NOFOLLOW), a FIFO,
    device, socket or directory is never opened (checked with lstat before,
    and fstat after, the open).  ``write`` opens it read-write; ``create``
    (a mode) creates a missing file.  Returns the descriptor, or None when
    the file does not exist and ``create`` is None.  OSError naming
    ``shown`` (default ``path``) otherwise."""
    shown = shown or path
    try:
        info = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        info = None
        if create is None:
            return None
    if info is not None:
        problem = _not_ours(info, shown)
        if problem:
            raise problem
    flags = _OPEN | os.O_NOFOLLOW | (os.O_RDWR if write else os.O_RDONLY)
    if create is not None:
        flags |= os.O_CREAT
    try:
        fd = os.open(path, flags, create or 0o600, dir_fd=dir_fd)
    except (FileNotFoundError, NotADirectoryError):
        if create is None:
            return None
        raise
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):  # replaced by a link since the lstat
            raise _problem(errno.ELOOP, "it is a symbolic link (not followed)", shown)
        raise _problem(exc.errno or errno.EIO, exc.strerror or str(exc), shown)
    try:
        problem = _not_ours(os.fstat(fd), shown)
        if problem:
            raise problem
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bytes(path, limit=RECORD_LIMIT, own=False):
    """The content of the regular file ``path``, or None when it does not
    exist.  Raises OSError with a clear reason when it exists but is not a
    regular file (a FIFO or device is never opened for reading, so this never
    blocks), cannot be read, or is larger than ``limit`` bytes (never
    silently truncated).  ``own``: a file of ours (open_own: a symbolic link
    or a file with other hard links is refused)."""
    if own:
        fd = open_own(path)
        if fd is None:
            return None
    else:
        try:
            info = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(info.st_mode):
            raise _problem(errno.EINVAL, "not a regular file", path)
        try:
            fd = os.open(path, os.O_RDONLY | _OPEN)
        except (FileNotFoundError, NotADirectoryError):
            return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced since the stat
            raise _problem(errno.EINVAL, "not a regular file", path)
        data = read_fd(fd, limit)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise _problem(errno.EFBIG, "larger than %s" % _size(limit), path)
    return data


READ_CHUNK = 65536


def read_fd(fd, limit):
    """Up to ``limit`` + 1 bytes from ``fd`` (more than ``limit`` means the
    file is too large).  In 64 KiB reads: one os.read() of the whole limit
    would allocate a buffer that large (mmap), and with transparent huge
    pages the first byte written into it costs 2 MiB of RSS (seen as 2 and
    4 MiB jumps in the user unit's peak RSS, reading /etc/passwd)."""
    chunks, size = [], 0
    while size <= limit:
        chunk = os.read(fd, min(READ_CHUNK, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _size(limit):
    if limit % 1048576 == 0:
        return "%d MiB" % (limit // 1048576)
    if limit % 1024 == 0:
        return "%d KiB" % (limit // 1024)
    return "%d bytes" % limit


def read_text(path, limit=RECORD_LIMIT, own=False):
    """Like read_bytes, decoded as UTF-8 (undecodable bytes become U+FFFD)."""
    data = read_bytes(path, limit, own)
    return None if data is None else data.decode("utf-8", "replace")


def hold_lock(path, exclusive, bound):
    """Take an flock on ``path`` (created when missing), shared or exclusive,
    waiting at most ``bound`` seconds (polled, so a stuck holder delays a
    step by that much, never for ever).  Returns the open descriptor (close it
    to release the lock), or None when the lock was not had: a missing or
    read-only directory, not a regular file, or still held after ``bound``."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                     | os.O_CLOEXEC, 0o644)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        end = time.monotonic() + bound
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
                return fd
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN) or time.monotonic() >= end:
                    os.close(fd)
                    return None
            time.sleep(0.02)
    except BaseException:
        try:
            os.close(fd)
        except OSError:
            pass
        raise


# A second run of a step while one runs waits this long for it, then gives up
# (cli.Context.start); report-ready waits as long for a step that is still
# running before it judges the step's records (report_ready.why_not_ready).
STEP_LOCK_WAIT = 30.0


def step_lock_path(paths, step):
    return paths.run(step + ".lock")


def step_lock(path, bound):
    """Take the exclusive flock of one step (one run of a step at a time),
    waiting at most ``bound`` seconds.  Returns (fd, None) when held (the
    fd, kept open, holds it until the process ends; it records our pid);
    (None, holder) when another process still holds it after ``bound``
    (holder: its pid as recorded, or "?"); (None, None) when no lock could
    be made (no writable run directory, not a regular file): the caller
    goes on without one, its records will say what is wrong."""
    try:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    except OSError:
        pass
    fd = hold_lock(path, True, bound)
    if fd is not None:
        try:
            wfd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                if os.path.sameopenfile(fd, wfd):
                    os.ftruncate(wfd, 0)
                    os.write(wfd, ("%d\n" % os.getpid()).encode("ascii"))
            finally:
                os.close(wfd)
        except OSError:
            pass
        return fd, None
    try:
        probe = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None, None
    try:
        import fcntl

        if not stat.S_ISREG(os.fstat(probe).st_mode):
            return None, None
        try:
            fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None, None
            holder = read_fd(probe, 32).decode("ascii", "replace").strip()
            return None, holder if holder and set(holder) <= frozenset("0123456789") else "?"
        return None, None  # free now but could not be had: no lock (read-only)
    finally:
        os.close(probe)


def describe(exc):
    """An OSError -> one line: 'reason (path)'."""
    text = exc.strerror or str(exc)
    return "%s (%s)" % (text, exc.filename) if getattr(exc, "filename", None) else text


def write_atomic(path, data, mode=0o644, durable=True, keep_mode=True, owner=None,
                 check=None, dir_fd=None, shown=None, replace=False):
    """Replace the file of ours ``path`` with ``data`` (bytes or str) in one
    rename.  What is in its place must be a regular file or nothing: a
    symbolic link, directory, FIFO, device or socket there is refused
    (OSError naming the path, never the temporary file) and left as it is.
    Keeps the mode of an existing file unless ``keep_mode`` is False;
    ``owner`` (uid, gid) is set on the new file; ``check(temporary name)``
    may refuse the content before the rename by raising.  Missing parent
    directories are created (not with ``dir_fd``: then ``path`` is a name
    in that directory).  On any failure the old file is untouched and no
    temporary file is left.  ``durable=False`` skips the fsyncs (for
    records that may vanish on a power loss).  ``replace``: in a directory
    of the agent's own (its state and run directories) a symbolic link,
    FIFO, device or socket in the way is replaced by the rename (never
    opened, never followed); a directory still is not."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    shown = shown or path
    if dir_fd is None:
        directory = os.path.dirname(path) or "."
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, ".%s.%d.tmp" % (os.path.basename(path), os.getpid()))
    else:
        tmp = ".%s.%d.tmp" % (path, os.getpid())
    try:
        info = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        info = None
    if info is not None:
        problem = _not_ours(info, shown, links=False)  # a rename never writes through a link
        if problem and not (replace and not stat.S_ISDIR(info.st_mode)):
            raise _problem(problem.errno, problem.strerror + "; not replaced", shown)
        if keep_mode and not problem and info.st_nlink == 1:  # not the mode of another file
            mode = info.st_mode & 0o7777
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(tmp, flags, mode, dir_fd=dir_fd)
    except FileExistsError:  # left by a process of an earlier boot with our pid
        os.unlink(tmp, dir_fd=dir_fd)
        fd = os.open(tmp, flags, mode, dir_fd=dir_fd)
    try:
        try:
            if owner is not None:
                os.fchown(fd, owner[0], owner[1])
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        if check is not None:
            check(tmp)
        try:
            os.rename(tmp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as exc:  # name the file, not the temporary one
            raise _problem(exc.errno or errno.EIO, exc.strerror or str(exc), shown)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise
    if not durable:
        return
    try:
        dfd = os.open(directory, os.O_RDONLY) if dir_fd is None else dir_fd
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        if dfd != dir_fd:
            os.close(dfd)


def parse_record(text):
    """``key=value`` lines (separated by ``\\n`` only) -> dict (str -> str);
    other lines are ignored."""
    record = {}
    for line in text.split("\n"):
        key, sep, value = line.partition("=")
        if sep and key.strip():
            record[key.strip()] = value.strip()
    return record


def clean_value(value):
    """Any value -> one line without control characters: whitespace runs
    (including line and paragraph separators) become one space, every other
    character that is not printable (C0, DEL, C1, bidi overrides and other
    format characters) is shown as an escape (log.printable)."""
    text = " ".join(str(value).split())
    if text.isprintable():
        return text
    from azure_firstboot.log import printable

    return printable(text)


def format_record(record):
    """dict -> ``key=value`` lines; values are flattened to one line with no
    control characters (data from the network never reaches a file raw).
    Keys are ours: a key that is not a plain word is a programming error."""
    lines = []
    for key in sorted(record):
        if record[key] is None:
            continue
        if not key or not set(key) <= _KEY_CHARS:
            raise ValueError("bad record key %r" % (key,))
        lines.append("%s=%s\n" % (key, clean_value(record[key])))
    return "".join(lines)


def read_record(path):
    text = read_text(path, own=True)
    return parse_record(text) if text is not None else None


def write_record(path, record, durable=True):
    """A record in the agent's own state or run directory (what is in the
    way there, but a directory, is replaced)."""
    write_atomic(path, format_record(record), durable=durable, replace=True)


def now_iso():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class State(object):
    """The agent's records for one VM id under one root.

    Every step writes a record as its first action (``begin``: "started",
    in this boot's run directory and in the state directory) and its result
    at the end (``record``).  report-ready reads both to tell a step that
    finished from one that crashed, was killed or could not record."""

    def __init__(self, paths, vm_id):
        self.paths = paths
        self.vm_id = vm_id
        try:
            boot_id = read_text(paths("/proc/sys/kernel/random/boot_id"), 4096)
        except OSError:
            boot_id = None
        self.boot_id = boot_id.strip() if boot_id else None
        self.problem = None  # why this step's records could not be written
        self.unreadable = []  # records that exist but could not be read (for status)

    def _read(self, path, what):
        try:
            return read_record(path)
        except OSError as exc:
            from azure_firstboot import log

            log.warning("cannot read %s: %s" % (what, describe(exc)))
            self.unreadable.append("%s: %s" % (what, describe(exc)))
            return None

    def provisioned(self):
        """The marker, if it belongs to this VM; else None (also when it
        cannot be read: a warning says why, and provisioning runs again)."""
        marker = self._read(self.paths.state("provisioned"), "the marker")
        if marker and marker.get("vm_id") == self.vm_id:
            return marker
        return None

    def mark_provisioned(self, incarnation):
        write_record(self.paths.state("provisioned"),
                     {"vm_id": self.vm_id, "incarnation": incarnation, "time": now_iso()})

    def begin(self, step):
        """The step's first action: record that it started in this boot.
        Raises OSError (after recording the failure where it can) when the
        records cannot be written, except for report-ready, which keeps the
        problem in ``self.problem`` to report it to the WireServer."""
        entry = {"vm_id": self.vm_id, "boot_id": self.boot_id, "step": step,
                 "result": "started", "pid": os.getpid(), "time": now_iso()}
        try:
            write_record(self.paths.run(step + ".boot"), entry, durable=False)
            write_record(self.paths.state(step + ".result"), entry, durable=False)
        except OSError as exc:
            self.problem = "cannot write its records: %s" % describe(exc)
            if step == READY_STEP:
                return
            self._fallback(step, dict(entry, result="failed", reason=self.problem))
            raise _problem(exc.errno or errno.EIO, self.problem, None)

    def _fallback(self, step, entry):
        """Best effort: write a failure wherever it can still be written."""
        for path in (self.paths.run(step + ".boot"), self.paths.state(step + ".result")):
            try:
                write_record(path, entry, durable=False)
            except OSError:
                pass

    def record(self, step, result, **details):
        """Record a step's outcome: result is 'ok', 'failed' or 'skipped'.
        When it cannot be written, the step counts as failed: the failure is
        recorded wherever possible and OSError is raised."""
        entry = {"vm_id": self.vm_id, "boot_id": self.boot_id, "step": step, "result": result,
                 "time": now_iso()}
        entry.update(details)
        try:
            write_record(self.paths.state(step + ".result"), entry)
            write_record(self.paths.run(step + ".boot"), entry, durable=False)
        except OSError as exc:
            problem = "could not record its result (%s): %s" % (result, describe(exc))
            reason = entry.get("reason")
            self._fallback(step, dict(entry, result="failed",
                                      reason="%s; %s" % (reason, problem) if reason else problem))
            raise _problem(exc.errno or errno.EIO, problem, None)
        return entry

    def result(self, step, this_boot=False):
        """The last recorded outcome of ``step`` for this VM (and, with
        ``this_boot``, recorded during the current boot), or None."""
        entry = self._read(self.paths.state(step + ".result"), "the %s result" % step)
        if not entry or entry.get("vm_id") != self.vm_id:
            return None
        if this_boot and entry.get("boot_id") != self.boot_id:
            return None
        return entry

    def boot_record(self, step):
        """This boot's record of ``step`` (run directory), or None."""
        entry = self._read(self.paths.run(step + ".boot"), "the %s record of this boot" % step)
        if not entry or entry.get("vm_id") != self.vm_id or entry.get("boot_id") != self.boot_id:
            return None
        return entry

    def outcome(self, step):
        """What ``step`` did in this boot: None when it did not start, else
        its record, whose result is 'ok', 'skipped', 'failed' (with a
        reason) or 'started' (it has not finished: crashed or killed, or
        still running)."""
        run = self.boot_record(step)
        saved = self.result(step, this_boot=True)
        if run is None:
            return saved
        if run.get("result") == "started" and saved and saved.get("result") == "failed":
            return saved  # the step could write only to the state directory
        return run

    def latest(self, step):
        """For people (status): this boot's record when there is one, else
        the last recorded result."""
        return self.boot_record(step) or self.result(step)

    def set_boot_flag(self, name, text):
        write_atomic(self.paths.run(name), text + "\n", durable=False, replace=True)

    def boot_flag(self, name):
        try:
            text = read_text(self.paths.run(name), own=True)
        except OSError:
            return None
        return text.strip() if text is not None else None

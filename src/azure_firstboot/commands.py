"""The one command runner: an argument list, never a shell (fork + exec by
hand), and where commands are found.  Run only with values that passed
validation."""

import os


def _which(name):
    for directory in ("/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    return None


which = _which  # for the units (user: visudo)


def run(argv, timeout=30, stdin=None, raw=False):
    """Run a command: an argument list, never a shell.  Returns (ok, its
    stdout+stderr as one line of at most 300 characters), or with ``raw``
    (ok, the whole output, up to 64 KiB, as text).  ``stdin`` (bytes) is fed
    to its standard input, the way secrets travel (never on a command line);
    without it the command reads /dev/null.  Killed after ``timeout`` seconds.

    fork + exec by hand, not the subprocess module: its import (locale, re,
    enum, threading, selectors) cost every unit that ran a command ~0.1 s
    under QEMU/TCG and half again a bare interpreter's peak RSS."""
    import _signal
    import select
    import time

    path = argv[0] if "/" in argv[0] else _which(argv[0])
    if path is None:
        return False, "%s: not found" % argv[0]
    rfd, wfd = os.pipe()
    in_r, in_w = os.pipe() if stdin is not None else (None, None)
    try:
        pid = os.fork()
    except OSError as exc:
        for fd in (rfd, wfd, in_r, in_w):
            if fd is not None:
                os.close(fd)
        return False, "%s: %s" % (argv[0], exc.strerror)
    if pid == 0:  # child: only async-signal-safe steps, then exec
        try:
            # Python ignores SIGPIPE and SIGXFSZ; an exec'd command must not inherit that.
            for name in ("SIGPIPE", "SIGXFSZ"):
                if hasattr(_signal, name):
                    _signal.signal(getattr(_signal, name), _signal.SIG_DFL)
            source = in_r if stdin is not None else os.open("/dev/null", os.O_RDONLY)
            os.dup2(source, 0)
            os.dup2(wfd, 1)
            os.dup2(wfd, 2)
            os.closerange(3, 1024)
            os.execv(path, list(argv))
        finally:
            os._exit(127)
    os.close(wfd)
    writing = []
    if stdin is not None:
        os.close(in_r)
        os.set_blocking(in_w, False)
        writing = [in_w]
        pending = memoryview(stdin)
    out, size, end = [], 0, time.monotonic() + timeout
    timed_out = False
    try:
        while rfd is not None:  # until the output ends (EOF)
            left = end - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            readable, writable, _ = select.select([rfd], writing, [], left)
            if writable:
                try:
                    pending = pending[os.write(in_w, pending[:65536]):]
                except OSError:  # the command closed its stdin: it has what it wanted
                    pending = pending[:0]
                if not pending:
                    os.close(in_w)
                    writing = []
            if readable:
                chunk = os.read(rfd, 65536)
                if not chunk:
                    os.close(rfd)
                    rfd = None
                elif size < 65536:
                    out.append(chunk)
                    size += len(chunk)
        while not timed_out:  # output closed: wait for the exit, within the same timeout
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() >= end:
                timed_out = True
            else:
                time.sleep(0.01)
        if timed_out:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return False, "%s timed out after %d s" % (" ".join(argv), timeout)
    finally:
        if rfd is not None:
            os.close(rfd)
        for fd in writing:
            os.close(fd)
    text = b"".join(out)[:65536].decode("utf-8", "replace")
    if not raw:
        text = " ".join(text.split())[:300]
    ok = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    if not ok and not text.strip():
        text = "exit status %d" % (os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1)
    return ok, text

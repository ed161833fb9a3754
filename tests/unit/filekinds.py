"""Files of every type planted where the agent writes or reads its own files
(tests of the one rule for them: state.open_own, write_atomic)."""
import os
import socket
import stat


def plant(path, kind, outside):
    """Put a ``kind`` at ``path`` ("missing" puts nothing); ``outside`` is what a
    link points at and must never change."""
    if kind == "regular":
        with open(path, "wb") as handle:
            handle.write(b"mine\n")
    elif kind == "file":
        with open(path, "w") as handle:
            handle.write("a file\n")
    elif kind == "symlink":
        os.symlink(outside, path)
    elif kind == "dangling-symlink":
        os.symlink(outside + ".missing", path)
    elif kind == "hardlink":
        os.link(outside, path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        os.mkdir(path)
        with open(os.path.join(path, "keep"), "wb") as handle:
            handle.write(b"x")
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(path)
        sock.close()
    elif kind == "device":
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    elif kind != "missing":
        raise ValueError(kind)

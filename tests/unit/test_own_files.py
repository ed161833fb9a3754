"""The one rule for the agent's own files (issue 17), unit level:
state.open_own / read_bytes(own=True) / write_atomic / Paths.own against
every kind of file in the way, and the one strict number parser for every
number read from a file (account databases, login.defs, pids, lease names)."""

import errno
import os
import stat

import pytest

import filekinds

from azure_firstboot import accounts, admin, log, state as st

KINDS = ["missing", "regular", "symlink", "dangling-symlink", "hardlink", "fifo", "directory",
         "socket"] + (["device"] if os.geteuid() == 0 else [])


def plant(directory, kind, name="f"):
    """``directory/name`` as a file of ``kind``; returns (path, a file outside it
    that must never change)."""
    path = os.path.join(str(directory), name)
    outside = os.path.join(str(directory), "outside")
    with open(outside, "wb") as handle:
        handle.write(b"secret\n")
    filekinds.plant(path, kind, outside)
    return path, outside


def snapshot(path):
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    return (info.st_mode, info.st_ino, info.st_nlink, info.st_size, info.st_uid)


@pytest.mark.parametrize("kind", KINDS)
def test_open_own_accepts_only_a_plain_file_of_ours(tmp_path, kind):
    path, outside = plant(tmp_path, kind)
    before = snapshot(path)
    if kind == "missing":
        assert st.open_own(path) is None and st.read_bytes(path, own=True) is None
        fd = st.open_own(path, write=True, create=0o600)
        os.close(fd)
        assert stat.S_ISREG(os.lstat(path).st_mode)
        return
    if kind == "regular":
        assert st.read_bytes(path, own=True) == b"mine\n"
        os.close(st.open_own(path, write=True, create=0o600))
        return
    for attempt in (lambda: st.open_own(path, write=True, create=0o600),
                    lambda: st.read_bytes(path, own=True)):
        with pytest.raises(OSError) as info:
            attempt()
        assert info.value.filename == path and "\n" not in info.value.strerror
        expected = {"symlink": "symbolic link (not followed)",
                    "dangling-symlink": "symbolic link (not followed)",
                    "hardlink": "2 hard links", "directory": "is a directory"}.get(kind, "not a regular file")
        assert expected in info.value.strerror
    assert snapshot(path) == before
    with open(outside, "rb") as handle:
        assert handle.read() == b"secret\n"


@pytest.mark.parametrize("kind", KINDS)
def test_write_atomic_refuses_what_is_in_the_way(tmp_path, kind):
    path, outside = plant(tmp_path, kind)
    before = snapshot(path)
    if kind in ("missing", "regular", "hardlink"):  # a rename never writes through a link
        os.chmod(outside, 0o640)
        st.write_atomic(path, b"new\n", mode=0o600)
        with open(path, "rb") as handle:
            assert handle.read() == b"new\n"
        if kind == "hardlink":  # the mode of the other file is not taken over
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and os.stat(path).st_nlink == 1
    else:
        with pytest.raises(OSError) as info:
            st.write_atomic(path, b"new\n")
        assert info.value.filename == path and "not replaced" in info.value.strerror
        assert ".tmp" not in st.describe(info.value)
        assert snapshot(path) == before
    with open(outside, "rb") as handle:
        assert handle.read() == b"secret\n"
    assert not [n for n in os.listdir(str(tmp_path)) if n.endswith(".tmp")]


@pytest.mark.parametrize("kind", ["symlink", "fifo", "socket", "directory"])
def test_records_replace_what_is_in_the_way_but_a_directory(tmp_path, kind):
    """In the agent's own directories a record replaces an obstacle by the
    rename (never opening or following it); a directory stays and is an error."""
    path, outside = plant(tmp_path, kind)
    if kind == "directory":
        with pytest.raises(OSError) as info:
            st.write_record(path, {"a": "1"})
        assert info.value.filename == path
    else:
        st.write_record(path, {"a": "1"})
        assert st.read_record(path) == {"a": "1"}
    with open(outside, "rb") as handle:
        assert handle.read() == b"secret\n"
    assert not [n for n in os.listdir(str(tmp_path)) if n.endswith(".tmp")]


def test_a_failed_check_or_rename_leaves_no_temporary_file(tmp_path):
    target = str(tmp_path / "rule")

    def refuse(tmp):
        assert os.path.exists(os.path.join(str(tmp_path), tmp) if not os.path.isabs(tmp) else tmp)
        raise ValueError("refused")

    with pytest.raises(ValueError):
        st.write_atomic(target, b"x", check=refuse)
    assert os.listdir(str(tmp_path)) == []
    # relative to a directory descriptor, with an owner, exact mode
    fd = os.open(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        st.write_atomic("keys", b"k\n", mode=0o600, keep_mode=False, owner=(os.getuid(), os.getgid()),
                        dir_fd=fd)
        os.chmod(str(tmp_path / "keys"), 0o644)
        st.write_atomic("keys", b"k2\n", mode=0o600, keep_mode=False, dir_fd=fd)
        os.mkdir(str(tmp_path / "d"))
        with pytest.raises(OSError) as info:
            st.write_atomic("d", b"x", dir_fd=fd, shown="/home/u/.ssh/d")
        assert info.value.filename == "/home/u/.ssh/d"
    finally:
        os.close(fd)
    assert (tmp_path / "keys").read_bytes() == b"k2\n"
    assert stat.S_IMODE(os.stat(str(tmp_path / "keys")).st_mode) == 0o600
    assert sorted(os.listdir(str(tmp_path))) == ["d", "keys"]


def test_paths_own_does_not_follow_the_last_component(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "real").mkdir()
    os.symlink("/real", str(root / "var"))                # a directory link: followed (in the root)
    os.symlink("/etc/shadow", str(root / "real" / "hostname"))
    paths = st.Paths(str(root))
    assert paths.own("/var/hostname") == str(root / "real" / "hostname")
    assert paths("/var/hostname") == str(root / "etc" / "shadow")
    assert paths.state("x") == str(root / "real/lib/azure-firstboot/x")
    assert paths.own("/") == paths("/")
    assert st.Paths("/").own("/etc/hosts") == "/etc/hosts"


# ------------------------------------------------------------- numbers

NOT_NUMBERS = ["\u0661\u0662", "\u00b2", "12\u0663", "+5", "-1", "1_0", " 7", "7 ", "0x10", "", "1" * 11,
               "\uff11"]


@pytest.mark.parametrize("text", NOT_NUMBERS)
def test_account_numbers_are_plain_ascii_digits(text):
    passwd = "root:x:0:0:root:/root:/bin/sh\nevil:x:%s:%s::/home/evil:/bin/sh\n" % (text, text)
    assert accounts.passwd_entries(passwd) == {"root": (0, 0, "/root", "/bin/sh")}
    expected = (7, 7) if text.strip() == "7" else (1000, 60000)  # login.defs is words: " 7" is 7
    assert accounts.uid_range("UID_MIN %s\nUID_MAX %s\n" % (text, text)) == expected
    assert accounts.id_number(text) is None
    # never a traceback; a pid that is not a number is not the unit's process (status)
    assert admin._running(text, "report-ready") is False


def test_account_numbers_that_are_numbers():
    assert accounts.passwd_entries("a:x:1001:1002::/home/a:/bin/sh\n") == {"a": (1001, 1002, "/home/a", "/bin/sh")}
    assert accounts.uid_range("UID_MIN 500\nUID_MAX\t4294967294\n") == (500, 4294967294)


# ------------------------------------------------------------- control characters

@pytest.mark.parametrize("char", ["\x85", "\x9b", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e",
                                  "\u2066", "\u2067", "\u2068", "\u2069", "\u200e", "\u061c",
                                  "\ufeff", "\U000e0001", "\x1b"])
def test_no_control_character_reaches_a_key_comment_or_a_record(char):
    blob = "AAAAC3NzaC1lZDI1NTE5AAAAIEaZhwlR22lMmhve4dgEdglhWwsIr/x1/Yfe3rwf2W2a"
    if char == "\x1b":  # C0 in a key line is refused outright
        with pytest.raises(ValueError):
            accounts.parse_key("ssh-ed25519 %s a%sb" % (blob, char))
    else:
        line = accounts.parse_key("ssh-ed25519 %s a%sb" % (blob, char))
        assert line.isprintable() and line.startswith("ssh-ed25519 " + blob + " a")
    value = st.clean_value("x%sy" % char)
    assert value.isprintable() and "\n" not in value
    assert log.printable("x%sy" % char).isprintable()
    assert st.clean_value("\U000e0001") == "\\U000e0001"

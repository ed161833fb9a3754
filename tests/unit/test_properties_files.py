"""Properties of the file readers and writers (issue 8): the /etc/hosts and
dhclient.conf rewrites keep every byte they do not own, state records
round-trip and never carry a control character, Paths never leads outside
the root, reads never block or truncate.  The Hypothesis profile ("ci":
derandomized, fixed budget) comes from conftest.py."""

import errno
import os
import stat

import pytest
from hypothesis import assume, given, strategies as hs

from azure_firstboot import state as st
from azure_firstboot import hostfiles, net_dhclient

# ----------------------------------------------------------------- /etc/hosts

LABEL = hs.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
NAMES = hs.lists(LABEL, min_size=1, max_size=3).map(".".join)
# Bytes that confuse line splitting: \r \f \v \x1c-\x1e, NEL, U+2028/2029 (as UTF-8 and
# latin-1), NUL, non-UTF-8, plus ordinary hosts-file material.
NASTY = [b"\r", b"\f", b"\v", b"\x1c", b"\x1d", b"\x1e", b"\x85", b"\xc2\x85", b"\xe2\x80\xa8",
         b"\xe2\x80\xa9", b"\x00", b"\xff\xfe", b"\xe9", b"\t", b" ", b"#", b"\n", b"\r\n"]
PIECES = hs.one_of(
    hs.sampled_from(NASTY),
    hs.sampled_from([b"127.0.0.1", b"127.0.1.1", b"::1", b"localhost", b"debian", b"old.example"]),
    hs.binary(max_size=8),
)
HOSTS = hs.lists(PIECES, max_size=40).map(b"".join)


def _lines(data):
    return data.split(b"\n")


def _owned(line):
    body = line[:-1] if line.endswith(b"\r") else line
    return (all(0x20 <= b < 0x7f or b == 0x09 for b in body)
            and body.split(b"#", 1)[0].split()[:1] == [b"127.0.1.1"])


# The regression corpus of issue 8 (each separator on either side of the owned line).
CORPUS = [b"127.0.1.1\told" + sep + b"127.0.0.1\tlocalhost\n" for sep in NASTY[:10]] + [
    b"127.0.0.1\tlocalhost" + sep + b"127.0.1.1\told\n" for sep in NASTY[:10]] + [
    b"127.0.0.1\tlocalhost\n127.0.1.1\told\n# caf\xe9 \xff\xfe\n",
    b"127.0.0.1\tlocalhost\r\n127.0.1.1\told\r\n"]


@given(HOSTS, NAMES)
def test_hosts_rewrite_changes_only_its_lines(data, name):
    out = hostfiles.hosts_with_name(data, name)
    before = _lines(data)
    if out is None:
        assert not any(_owned(line) for line in before)
        return
    after = _lines(out)
    assert len(after) == len(before)  # no line joined or split
    for old, new in zip(before, after):
        if _owned(old):
            assert new == b"127.0.1.1\t" + name.encode() + (b"\r" if old.endswith(b"\r") else b"")
        else:
            assert new == old  # every byte of every other line kept
    assert hostfiles.hosts_with_name(out, name) == out  # idempotent


LINE_BREAKERS = [b for b in NASTY if b not in (b"\t", b" ", b"#")]  # not field separators


@given(hs.lists(hs.sampled_from(LINE_BREAKERS), min_size=1, max_size=3).map(b"".join), NAMES)
def test_hosts_separator_next_to_the_owned_line_keeps_localhost(sep, name):
    for data in (b"127.0.1.1\told" + sep + b"127.0.0.1 localhost\n",
                 b"127.0.0.1 localhost" + sep + b"127.0.1.1\told\n"):
        out = hostfiles.hosts_with_name(data, name)
        assert b"127.0.0.1 localhost" in (data if out is None else out)


@pytest.mark.parametrize("data", CORPUS)
def test_hosts_regression_corpus(data):
    out = hostfiles.hosts_with_name(data, "vm1")
    result = data if out is None else out
    assert b"127.0.0.1\tlocalhost" in result and result.count(b"\n") == data.count(b"\n")
    assert result.replace(b"127.0.1.1\tvm1", b"127.0.1.1\told") == data


def test_hosts_str_interface_and_crlf():
    assert hostfiles.hosts_with_name("127.0.0.1 localhost\r\n127.0.1.1 debian\r\n", "vm1") == \
        "127.0.0.1 localhost\r\n127.0.1.1\tvm1\r\n"
    assert hostfiles.hosts_with_name(b"127.0.1.1 caf\xe9\n", "vm1") is None


# ------------------------------------------------------------- dhclient.conf

CONF = hs.lists(hs.one_of(hs.sampled_from(NASTY + [b"send host-name", b"send", b"host-name", b";"]),
                          hs.binary(max_size=8)), max_size=40).map(b"".join)


@given(CONF)
def test_dhclient_conf_rewrite_appends_only(data):
    out = net_dhclient.dhclient_conf_with_hostname(data)
    if out is None:
        assert net_dhclient.dhclient_conf_sends_hostname(data)
        return
    assert out.startswith(data)  # every byte kept, in place
    added = out[len(data):]
    assert added in (b"send host-name = gethostname();\n", b"\nsend host-name = gethostname();\n")
    assert net_dhclient.dhclient_conf_sends_hostname(out)
    assert net_dhclient.dhclient_conf_with_hostname(out) is None


def test_dhclient_conf_over_64_kib_is_kept_whole(tmp_path):
    paths = st.Paths(str(tmp_path))
    big = b"# padding \xff\n" * 20000 + b"request subnet-mask;"
    (tmp_path / "etc" / "dhcp").mkdir(parents=True)
    (tmp_path / "etc" / "dhcp" / "dhclient.conf").write_bytes(big)
    net_dhclient.ensure_dhclient_sends_hostname(paths)
    data = (tmp_path / "etc" / "dhcp" / "dhclient.conf").read_bytes()
    assert data == big + b"\nsend host-name = gethostname();\n"


# --------------------------------------------------------------- records

KEYS = hs.from_regex(r"[a-z_][a-z0-9_.-]{0,12}", fullmatch=True)
VALUES = hs.one_of(hs.text(max_size=40), hs.integers(), hs.floats(allow_nan=False),
                   hs.text(alphabet=hs.characters(max_codepoint=0x3000), max_size=20))


@given(hs.dictionaries(KEYS, VALUES, max_size=8))
def test_records_round_trip_without_control_characters(record):
    text = st.format_record(record)
    text.encode("utf-8")  # always encodable, even with lone surrogates in the values
    for line in text.split("\n")[:-1]:
        assert line.isprintable(), line
    parsed = st.parse_record(text)
    assert parsed == {k: st.clean_value(v) for k, v in record.items()}
    assert st.parse_record(st.format_record(parsed)) == parsed  # clean values are a fixed point


@given(hs.text(max_size=60))
def test_record_keys_are_checked(key):
    assume(not key or not set(key) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-."))
    with pytest.raises(ValueError):
        st.format_record({key: "x"})


def test_network_controls_never_reach_a_record():
    text = st.format_record({"reason": "bad\x1b[31mred\r\nforged=1\x85\u2028\x00\x9b"})
    assert text == "reason=bad\\x1b[31mred forged=1 \\x00\\x9b\n"


# --------------------------------------------------------------- Paths

SEGMENTS = hs.lists(hs.sampled_from(["etc", "var", "lib", "..", ".", "a", "b", "link", "up", "abs"]),
                    max_size=6).map(lambda parts: "/" + "/".join(parts))


@given(SEGMENTS)
def test_paths_never_leave_the_root(tmp_path_factory, path):
    base = tmp_path_factory.mktemp("p")
    root = base / "root"
    for d in ("etc", "var/lib", "a/b"):
        (root / d).mkdir(parents=True, exist_ok=True)
    outside = base / "outside"
    outside.mkdir()
    os.symlink(str(outside), str(root / "etc" / "link"))    # absolute, out of the tree
    os.symlink("../../..", str(root / "a" / "b" / "up"))   # relative, climbs out
    os.symlink("/var", str(root / "a" / "abs"))             # absolute, means ROOT/var
    resolved = st.Paths(str(root))(path)
    real_root = os.path.realpath(str(root))
    assert resolved == real_root + "/" or resolved.startswith(real_root + "/")
    # no component of what exists is a symlink, so nothing is followed later
    probe = real_root
    for part in resolved[len(real_root):].split("/"):
        if part:
            probe = os.path.join(probe, part)
            assert not os.path.islink(probe)


def test_paths_chroot_semantics_and_loops(tmp_path):
    root = tmp_path / "r"
    (root / "real").mkdir(parents=True)
    os.symlink("/real", str(root / "etc"))
    os.symlink("a", str(root / "b"))
    os.symlink("b", str(root / "a"))
    paths = st.Paths(str(root))
    real = os.path.realpath(str(root))
    assert paths("/etc/hostname") == real + "/real/hostname"
    assert paths("/../../etc/x") == real + "/real/x"
    with pytest.raises(OSError) as info:
        paths("/a/x")
    assert info.value.errno == errno.ELOOP
    assert st.Paths("/")("/etc/hostname") == "/etc/hostname"


# --------------------------------------------------------------- reading

@given(hs.binary(max_size=300), hs.integers(min_value=0, max_value=300))
def test_read_bytes_returns_all_or_refuses(tmp_path_factory, data, limit):
    path = str(tmp_path_factory.mktemp("r") / "f")
    with open(path, "wb") as handle:
        handle.write(data)
    if len(data) <= limit:
        assert st.read_bytes(path, limit) == data
    else:
        with pytest.raises(OSError) as info:
            st.read_bytes(path, limit)
        assert info.value.errno == errno.EFBIG and "larger than" in info.value.strerror


def test_read_refuses_a_fifo_at_once(tmp_path):
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    with pytest.raises(OSError) as info:
        st.read_bytes(fifo)
    assert "not a regular file" in info.value.strerror
    assert st.read_bytes(str(tmp_path / "missing")) is None
    assert st.read_bytes(str(tmp_path / "fifo" / "below")) is None


# --------------------------------------------------------------- writing

def test_write_atomic_leaves_no_temp_file_on_any_failure(tmp_path):
    target = tmp_path / "dir-in-the-way"
    target.mkdir()
    (target / "keep").write_text("x")
    with pytest.raises(OSError):  # rename onto a non-empty directory fails
        st.write_atomic(str(target), b"data")
    assert sorted(os.listdir(str(tmp_path))) == ["dir-in-the-way"]
    # a stale temp file of an earlier process with our pid is replaced, not an error
    stale = tmp_path / (".f.%d.tmp" % os.getpid())
    stale.write_text("stale")
    st.write_atomic(str(tmp_path / "f"), "new", mode=0o600)
    assert (tmp_path / "f").read_text() == "new"
    assert stat.S_IMODE(os.stat(str(tmp_path / "f")).st_mode) == 0o600
    assert sorted(os.listdir(str(tmp_path))) == ["dir-in-the-way", "f"]


# ------------------------------------------- the agent's own files (issue 17)

from azure_firstboot import accounts  # noqa: E402

KINDS = ["missing", "regular", "symlink", "dangling-symlink", "hardlink", "fifo", "directory",
         "socket"] + (["device"] if os.geteuid() == 0 else [])


def _plant(directory, kind):
    import socket

    path = os.path.join(directory, "own")
    outside = os.path.join(directory, "outside")
    with open(outside, "wb") as handle:
        handle.write(b"outside\n")
    if kind == "regular":
        with open(path, "wb") as handle:
            handle.write(b"old\n")
    elif kind in ("symlink", "dangling-symlink"):
        os.symlink(outside + ("" if kind == "symlink" else ".gone"), path)
    elif kind == "hardlink":
        os.link(outside, path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        os.mkdir(path)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(path)
        sock.close()
    elif kind == "device":
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    return path, outside


def _shot(path):
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    return (info.st_mode, info.st_ino, info.st_nlink, info.st_size)


OPS = ["read", "open-rw", "write_atomic", "write_record"]


@given(hs.sampled_from(KINDS), hs.sampled_from(OPS), hs.binary(max_size=64))
def test_own_files_one_rule_for_every_kind(tmp_path_factory, kind, op, data):
    """Whatever is at the path: the operation succeeds only on a plain file
    of ours (or nothing), else raises OSError naming the path; what was
    there and the file outside stay as they were; no temporary file."""
    directory = str(tmp_path_factory.mktemp("own"))
    path, outside = _plant(directory, kind)
    before = _shot(path)
    ok = {"read": ("missing", "regular"), "open-rw": ("missing", "regular"),
          "write_atomic": ("missing", "regular", "hardlink"),
          "write_record": ("missing", "regular", "hardlink", "symlink", "dangling-symlink", "fifo",
                           "socket", "device")}[op]
    try:
        if op == "read":
            st.read_bytes(path, own=True)
        elif op == "open-rw":
            os.close(st.open_own(path, write=True, create=0o600))
        elif op == "write_atomic":
            st.write_atomic(path, data)
        else:
            st.write_record(path, {"k": data.decode("latin-1")})
    except OSError as exc:
        assert kind not in ok, (kind, op, exc)
        assert exc.filename == path and exc.strerror and "\n" not in exc.strerror
        assert _shot(path) == before
    else:
        assert kind in ok, (kind, op)
        if not (op == "read" and kind == "missing"):
            assert stat.S_ISREG(os.lstat(path).st_mode)
    with open(outside, "rb") as handle:
        assert handle.read() == b"outside\n"
    assert not [n for n in os.listdir(directory) if n.endswith(".tmp")]


BLOB = "AAAAC3NzaC1lZDI1NTE5AAAAIEaZhwlR22lMmhve4dgEdglhWwsIr/x1/Yfe3rwf2W2a"
KEY_LINES = ["ssh-ed25519 %s k%d" % (BLOB[:-4] + "%04d" % i, i) for i in range(3)]
KEY_PIECES = hs.one_of(hs.sampled_from(NASTY), hs.sampled_from([k.encode() for k in KEY_LINES]),
                       hs.sampled_from([b"command=\"caf\xe9\" ", b"# ", b"no-pty ", b"\xff"]),
                       hs.binary(max_size=8))
AUTHORIZED_KEYS = hs.lists(KEY_PIECES, max_size=20).map(b"".join)


def _sshd_blobs(data):
    """The keys sshd would read: lines split on \\n, words on space and tab,
    comment lines skipped."""
    found = set()
    for line in data.split(b"\n"):
        words = [w for w in line.replace(b"\t", b" ").split(b" ") if w]
        if words and words[0].startswith(b"#"):
            continue
        for i, word in enumerate(words[:-1]):
            if word == b"ssh-ed25519":
                found.add(words[i + 1])
                break
    return found


@given(AUTHORIZED_KEYS, hs.lists(hs.sampled_from(KEY_LINES), max_size=4))
def test_authorized_keys_merge_keeps_every_byte(existing, keys):
    out, added = accounts.merge_keys(existing, keys)
    assert out[:len(existing)] == existing  # every existing byte, in place
    tail = out[len(existing):]
    if added == 0:
        assert out == existing
    else:
        assert tail.lstrip(b"\n").endswith(b"\n") and tail.count(b"\n") in (added, added + 1)
    for key in keys:
        assert key.split()[1].encode() in _sshd_blobs(out)  # sshd reads every key asked for
    assert accounts.merge_keys(out, keys) == (out, 0)  # idempotent


# The regression corpus of issue 17 (authorized_keys that were rewritten or read through).
AK_CORPUS = [
    b'command="/usr/local/bin/caf\xe9 --only" ' + KEY_LINES[0].encode() + b"\r\n",
    b"# \xff\xfe not UTF-8 \xe2\x80\xae\n\x00binary\x85 tail",
    b"# " + KEY_LINES[0].encode() + b"\n",        # a commented-out key is not a key
    KEY_LINES[0].encode() + b"\xe2\x80\xa8" + KEY_LINES[1].encode(),  # U+2028 is not a line break
    b"\xc3",                                    # a cut UTF-8 sequence at the end
]


@pytest.mark.parametrize("existing", AK_CORPUS)
def test_authorized_keys_regression_corpus(existing):
    out, added = accounts.merge_keys(existing, KEY_LINES[:2])
    assert out.startswith(existing) and added >= 1
    assert {k.split()[1].encode() for k in KEY_LINES[:2]} <= _sshd_blobs(out)

"""The provisioning medium reader (medium.py) against images made by Debian's
own tools: genisoimage -udf (UDF 1.02 bridge, as Azure's DVD is UDF),
xorriso (ISO 9660 with Rock Ridge, with and without Joliet), genisoimage
without -udf (strict level 1 names), mkudffs (udftools: every UDF revision,
block size and media type it makes on a file; empty, since files get into a
UDF image only through a mount, and a loop mount is tried when available).
Then damaged and hostile images: every one gives a one-line MediumError or
None, never a traceback, and reads a bounded amount of data (Hypothesis
mutates bytes of a real image where the reader looks)."""

import os
import shutil
import struct
import subprocess
import tempfile

import pytest
from hypothesis import given, settings, strategies as hs

from azure_firstboot import medium
from azure_firstboot import state as st

OVF = b'<?xml version="1.0"?><Environment><x>ovf</x></Environment>\n'
SYSPATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"


def _tool(name):
    return shutil.which(name, path=SYSPATH)


def make_image(kind, files, path):
    """Build ``path`` of ``kind`` from {relative name: bytes}; pytest.skip
    when the tool is missing.  Kinds: udf (genisoimage -udf), iso (xorriso,
    Rock Ridge), joliet (xorriso -joliet on), iso-level1 (genisoimage, no
    extensions)."""
    tool = {"udf": "genisoimage", "iso": "xorriso", "joliet": "xorriso",
            "iso-level1": "genisoimage"}[kind]
    if not _tool(tool):
        pytest.skip("%s is not installed" % tool)
    src = tempfile.mkdtemp(prefix="afb-medium-")
    try:
        for name, data in files.items():
            full = os.path.join(src, name)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "wb") as handle:
                handle.write(data)
        if kind == "udf":
            argv = [tool, "-quiet", "-udf", "-R", "-V", "rd_rdfe_stable.200101-0000"[:32], "-o", path, src]
        elif kind == "iso-level1":
            argv = [tool, "-quiet", "-o", path, src]
        else:
            argv = [tool, "-outdev", path] + (["-joliet", "on"] if kind == "joliet" else []) + [
                "-map", src, "/"]
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    finally:
        shutil.rmtree(src)
    return path


def drop_iso(data):
    """Zero the ISO 9660 volume descriptors (CD001) of a bridge image, keep
    the UDF recognition sequence that follows them."""
    for at in range(16 * 2048, 64 * 2048, 2048):
        if data[at + 1:at + 6] == b"CD001":
            data[at:at + 2048] = bytes(2048)
    return data


def _read_all(data, counter=None):
    def read(offset, length):
        if counter is not None:
            counter.append(length)
        return bytes(data[offset:offset + length])
    return read


def parse(data, name=medium.OVF_NAME, counter=None):
    return medium.read_file(_read_all(data, counter), len(data), name)


def image_bytes(tmp_path, kind, files):
    path = make_image(kind, files, str(tmp_path / ("%s.img" % kind)))
    with open(path, "rb") as handle:
        return bytearray(handle.read())


# ------------------------------------------------------------------ real images

@pytest.mark.parametrize("kind", ["udf", "iso", "joliet", "iso-level1"])
def test_reads_ovf_env_from_images_of_debian_tools(tmp_path, kind):
    data = image_bytes(tmp_path, kind, {"ovf-env.xml": OVF, "other.txt": b"x" * 5000,
                                        "sub/ovf-env.xml": b"not this one"})
    assert parse(data) == OVF
    assert parse(data, "missing.xml") is None
    if kind != "iso-level1":
        assert parse(data, "sub/ovf-env.xml") == b"not this one"
        assert parse(data, "other.txt") == b"x" * 5000


@pytest.mark.parametrize("kind", ["udf", "joliet"])  # (plain ISO 9660 mangles a directory's name)
def test_empty_file_and_a_directory_in_its_place(tmp_path, kind):
    data = image_bytes(tmp_path, kind, {"ovf-env.xml": b"", "x/ovf-env.xml/y": b"1"})
    assert parse(data) == b""
    with pytest.raises(medium.MediumError) as err:
        parse(data, "x/ovf-env.xml")
    assert "directory" in str(err.value)


@pytest.mark.parametrize("kind", ["udf", "iso"])
def test_file_over_one_mib_is_refused(tmp_path, kind):
    data = image_bytes(tmp_path, kind, {"ovf-env.xml": b"<a/>" * (medium.FILE_MAX // 4 + 1)})
    with pytest.raises(medium.MediumError) as err:
        parse(data)
    assert "more than %d" % medium.FILE_MAX in str(err.value)


def test_udf_is_read_when_the_iso_9660_side_is_gone(tmp_path):
    """genisoimage -udf writes a bridge: wipe the ISO 9660 descriptors and
    the UDF structures alone still give the file."""
    data = image_bytes(tmp_path, "udf", {"ovf-env.xml": OVF})
    drop_iso(data)
    assert parse(data) == OVF


def test_iso_9660_is_read_when_the_udf_side_is_damaged(tmp_path):
    data = image_bytes(tmp_path, "udf", {"ovf-env.xml": OVF})
    data[256 * 2048 + 4] ^= 0xFF  # anchor checksum: the copy in the last block is used
    drop_iso(data)
    assert parse(data) == OVF
    data = image_bytes(tmp_path, "udf", {"ovf-env.xml": OVF})
    last = len(data) // 2048 - 1
    for block in (256, last, last - 256):
        data[block * 2048 + 4] ^= 0xFF
    assert parse(data) == OVF
    drop_iso(data)
    with pytest.raises(medium.MediumError) as err:
        parse(data)
    assert "anchor" in str(err.value)


MKUDFFS = [("hd", "1.02", None), ("hd", "1.50", None), ("hd", "2.01", None), ("dvd", "2.01", None),
           ("dvdram", "1.50", None), ("cdrw", "2.01", None), ("hd", "2.01", 512), ("hd", "2.01", 4096)]


@pytest.mark.parametrize("media, rev, blocksize", MKUDFFS)
def test_mkudffs_images(tmp_path, media, rev, blocksize):
    """Every layout mkudffs makes on a file (inline, short allocation,
    sparable partitions, 512/2048/4096-byte blocks): the root directory is
    read, the file is not there."""
    if not _tool("mkudffs"):
        pytest.skip("mkudffs (udftools) is not installed")
    path = str(tmp_path / "m.udf")
    argv = ["mkudffs", "--new-file", "--media-type=" + media, "--udfrev=" + rev]
    if blocksize:
        argv.append("--blocksize=%d" % blocksize)
    subprocess.run(argv + [path, "3000"], check=True, stdout=subprocess.DEVNULL, timeout=60)
    with open(path, "rb") as handle:
        data = handle.read()
    assert parse(data) is None
    if _loop_copy(path, {"ovf-env.xml": OVF}):
        with open(path, "rb") as handle:
            assert parse(handle.read()) == OVF


def _loop_copy(path, files):
    """Put files into a UDF image through a loop mount; False where loop
    devices or the udf module are not available (containers)."""
    mnt = tempfile.mkdtemp(prefix="afb-udfmnt-")
    try:
        if subprocess.run(["mount", "-o", "loop", "-t", "udf", path, mnt], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, timeout=30).returncode != 0:
            return False
        try:
            for name, data in files.items():
                with open(os.path.join(mnt, name), "wb") as handle:
                    handle.write(data)
        finally:
            subprocess.run(["umount", mnt], timeout=30)
        return True
    finally:
        os.rmdir(mnt)


def test_write_once_media_with_a_virtual_partition_are_refused(tmp_path):
    if not _tool("mkudffs"):
        pytest.skip("mkudffs (udftools) is not installed")
    path = str(tmp_path / "cdr.udf")
    subprocess.run(["mkudffs", "--new-file", "--media-type=cdr", path, "3000"], check=True,
                   stdout=subprocess.DEVNULL, timeout=60)
    with open(path, "rb") as handle:
        with pytest.raises(medium.MediumError) as err:
            parse(handle.read())
    assert "Virtual Partition is not supported" in str(err.value)


# ------------------------------------------------------------------ hostile images

@pytest.mark.parametrize("data, reason", ids=["empty", "small", "zeros", "ones"], argvalues=[
    (b"", "too small"),
    (bytes(30000), "too small"),
    (bytes(100000), "neither UDF nor ISO 9660"),
    (b"\xff" * 100000, "neither UDF nor ISO 9660"),
])
def test_not_a_medium(data, reason):
    with pytest.raises(medium.MediumError) as err:
        parse(data)
    assert reason in str(err.value)


def test_truncated_image(tmp_path):
    data = image_bytes(tmp_path, "udf", {"ovf-env.xml": OVF})
    for size in (40000, 256 * 2048 + 100, len(data) // 2, len(data) - 2048):
        try:
            found = parse(data[:size])
        except medium.MediumError as exc:
            assert "\n" not in str(exc)
        else:
            assert found in (OVF, None)


def _udf_root_fid(data, name):
    """Byte offset in the image of the root directory's FID for ``name``,
    and the root's (lbn, ref), found through the reader's own parts."""
    udf = medium._Udf(medium._Reader(_read_all(data), len(data)))
    _length, lbn, ref = udf.root(udf.volume())
    udf.visited.clear()
    _ftype, sized, embedded = udf._entry(ref, lbn, "root")
    assert embedded is None
    _info, extents = sized
    eref, elbn, _len = extents[0]
    base = udf._physical(eref, elbn, 1)
    at = 0
    while True:
        chars, name_len, iu_len = data[base + at + 18], data[base + at + 19], \
            struct.unpack_from("<H", data, base + at + 36)[0]
        raw = bytes(data[base + at + 38 + iu_len:base + at + 38 + iu_len + name_len])
        if raw[1:].decode("latin-1") == name:
            return base + at, (lbn, ref)
        at += (38 + iu_len + name_len + 3) & ~3


def _retag(data, at, length):
    """Recompute the CRC and checksum of the descriptor at ``at``."""
    crc_len = struct.unpack_from("<H", data, at + 10)[0]
    struct.pack_into("<H", data, at + 8, medium.crc_itu(bytes(data[at + 16:at + 16 + crc_len])))
    data[at + 4] = (sum(data[at:at + 4]) + sum(data[at + 5:at + 16])) & 0xFF


def test_directory_loop_is_refused(tmp_path):
    """A subdirectory whose ICB is the root's: a/a/a/... never ends; the
    reader sees the ICB a second time and stops."""
    data = image_bytes(tmp_path, "udf", {"a/ovf-env.xml": OVF})
    drop_iso(data)  # no ISO 9660 to fall back on
    at, (lbn, ref) = _udf_root_fid(data, "a")
    struct.pack_into("<IH", data, at + 24, lbn, ref)
    _retag(data, at, 0)
    with pytest.raises(medium.MediumError) as err:
        parse(data, "a/a/a/ovf-env.xml")
    assert "visited twice" in str(err.value)


def test_absurd_extent_is_refused(tmp_path):
    data = image_bytes(tmp_path, "udf", {"ovf-env.xml": OVF})
    drop_iso(data)
    at, _root = _udf_root_fid(data, "ovf-env.xml")
    struct.pack_into("<I", data, at + 24, 0x7FFFFFF0)  # the file entry far beyond the partition
    _retag(data, at, 0)
    with pytest.raises(medium.MediumError) as err:
        parse(data)
    assert "beyond" in str(err.value)


def test_crc_mismatch_is_refused(tmp_path):
    data = image_bytes(tmp_path, "udf", {"ovf-env.xml": OVF})
    drop_iso(data)
    at, _root = _udf_root_fid(data, "ovf-env.xml")
    data[at + 30] ^= 1  # inside the FID, under its CRC
    with pytest.raises(medium.MediumError) as err:
        parse(data)
    assert "CRC" in str(err.value)


def test_crc_itu_check_value():
    assert medium.crc_itu(b"123456789") == 0x31C3
    assert medium.crc_itu(b"") == 0


@pytest.fixture(scope="module")
def real_udf():
    top = tempfile.mkdtemp(prefix="afb-medium-fuzz-")
    try:
        path = make_image("udf", {"ovf-env.xml": OVF, "d/e.txt": b"e"}, os.path.join(top, "u.img"))
        with open(path, "rb") as handle:
            data = handle.read()
    finally:
        shutil.rmtree(top)
    reads = []

    def read(offset, length):
        reads.append((offset, length))
        return data[offset:offset + length]

    assert medium.read_file(read, len(data)) == OVF
    # bytes the reader looks at for a clean image: where mutations matter
    spots = sorted(set(offset + k for offset, length in reads for k in range(0, min(length, 2048))))
    return data, spots


@settings(max_examples=150)
@given(hs.data())
def test_mutated_images_never_crash(real_udf, data):
    image, spots = real_udf
    mutated = bytearray(image)
    count = data.draw(hs.integers(1, 8))
    for _ in range(count):
        at = data.draw(hs.sampled_from(spots))
        mutated[at] = data.draw(hs.integers(0, 255))
    if data.draw(hs.booleans()):
        # no ISO 9660 to fall back on: the UDF side alone
        drop_iso(mutated)
    fix = data.draw(hs.booleans())
    if fix:  # make damaged descriptors look valid again, so the damage goes deeper
        for block in range(len(mutated) // 2048):
            at = block * 2048
            ident = struct.unpack_from("<H", mutated, at)[0]
            if ident in (2, 5, 6, 256, 261, 266) and struct.unpack_from("<I", mutated, at + 12)[0] < 1 << 20:
                crc_len = struct.unpack_from("<H", mutated, at + 10)[0]
                if 16 + crc_len <= 2048:
                    _retag(mutated, at, 0)
    counter = []
    try:
        found = parse(bytes(mutated), counter=counter)
    except medium.MediumError as exc:
        text = str(exc)
        assert text and "\n" not in text
    else:
        assert found is None or isinstance(found, bytes)
        assert found is None or len(found) <= medium.FILE_MAX
    # bounded: descriptors, one directory, one file (each at most 1 MiB)
    assert sum(counter) <= 4 * medium.FILE_MAX


@settings(max_examples=100)
@given(hs.binary(min_size=0, max_size=4096), hs.integers(0, 300))
def test_random_bytes_at_the_structure_spots(blob, block):
    image = bytearray(300 * 2048)
    image[32768 + 1:32768 + 6] = b"NSR02"
    image[block * 2048:block * 2048 + len(blob)] = blob
    try:
        parse(bytes(image))
    except medium.MediumError as exc:
        assert "\n" not in str(exc)


# ------------------------------------------------------------------ the shell

class _Paths(st.Paths):
    pass


def test_read_ovf_env_under_root(tmp_path):
    paths = st.Paths(str(tmp_path))
    assert medium.read_ovf_env(paths) == (None, None, "no %s/dev/sr* image file" % tmp_path)
    os.makedirs(str(tmp_path / "dev"))
    make_image("udf", {"ovf-env.xml": OVF}, str(tmp_path / "dev" / "sr1"))
    with open(str(tmp_path / "dev" / "sr0"), "wb") as handle:
        handle.write(bytes(100000))
    data, device, why = medium.read_ovf_env(paths)
    assert (data, device, why) == (OVF, str(tmp_path / "dev" / "sr1"), "")
    assert medium.eject(device) == "not ejected: %s is an image file" % device
    os.unlink(str(tmp_path / "dev" / "sr1"))
    os.symlink("/etc/passwd", str(tmp_path / "dev" / "sr1"))
    data, device, why = medium.read_ovf_env(paths)
    assert data is None and "sr0: neither UDF nor ISO 9660" in why
    assert "sr1: " in why and "symbolic link" in why.lower() or "Too many levels" in why


def test_device_must_be_a_block_device_on_the_host(tmp_path):
    with open(str(tmp_path / "sr0"), "wb") as handle:
        handle.write(bytes(100000))
    with pytest.raises(medium.MediumError) as err:
        medium.read_device(str(tmp_path), "sr0", True)
    assert "not a block device" in str(err.value)
    assert medium.eject(str(tmp_path / "nothing")).startswith("not ejected: cannot open")

"""The provisioning medium, read without mounting it.

Azure hands a VM ``ovf-env.xml`` on a DVD (UDF; ISO 9660 is seen too).  This
module reads that one file straight from the block device: no mount, so the
user unit needs no CAP_SYS_ADMIN and the kernel's UDF/ISO 9660 drivers never
see an image from outside.

Pure core: ``read_file(read, size, name)`` parses the file system through a
``read(offset, length) -> bytes`` callback and returns the file's bytes,
None when the medium does not hold it, or raises MediumError with a one-line
reason for anything that is not a plausible medium.  Bounded: descriptors
are checked (tag identifier, checksum, CRC, location), a file over FILE_MAX
or a directory over DIR_MAX is refused, extents must lie inside the
partition and the image, the descent is a few levels deep and never visits
an ICB twice, allocation descriptors are counted.

UDF (ECMA-167 / OSTA UDF 1.02-2.60): volume recognition sequence at byte
32768 (NSR02/NSR03), Anchor Volume Descriptor Pointer at block 256 (or the
last block, or 256 before it), Partition and Logical Volume Descriptors,
type 1 and metadata partition maps (sparable ones are read as type 1; a
virtual (VAT) partition is refused), File Set Descriptor, (extended) file
entries with short, long or embedded allocation.  ISO 9660: primary volume
descriptor, or the Joliet supplementary one when there is one; plain names
("OVF_ENV.XML;1" as strict level 1 writes it matches too), no Rock Ridge.

Imperative shell: ``read_ovf_env(paths, wait)`` finds the devices that may
hold the medium (udev's file system type, or any CD-ROM drive: not always
/dev/sr0), opens each O_RDONLY|O_NONBLOCK|O_NOFOLLOW, requires a block
device (under ``--root DIR``: a regular image file DIR/dev/sr*; nothing
outside DIR is looked at), and returns the first ovf-env.xml found.
``eject(device)`` opens the tray (CDROMEJECT) once the file has been read;
on an image file it does nothing.
"""

import os
import stat
import struct

FILE_MAX = 1024 * 1024          # ovf-env.xml: larger is refused
DIR_MAX = 1024 * 1024           # a directory's data
DEPTH_MAX = 8                   # path components
ADS_MAX = 256                   # allocation descriptors of one file
VDS_MAX = 64                    # blocks of a volume descriptor sequence
ISO_VD_MAX = 32                 # ISO 9660 volume descriptors
OVF_NAME = "ovf-env.xml"
MEDIA_WAIT = 5.0                # seconds to wait for a drive to show up (udev may be late)

CDROMEJECT = 0x5309
CDROM_LOCKDOOR = 0x5329

_VRS_START = 32768
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class MediumError(Exception):
    """Not a plausible medium (or not one this reader takes): one-line reason."""


# ------------------------------------------------------------------ helpers

def _u16(buf, at):
    return _U16.unpack_from(buf, at)[0]


def _u32(buf, at):
    return _U32.unpack_from(buf, at)[0]


def _u64(buf, at):
    return _U64.unpack_from(buf, at)[0]


def _crc_table():
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC_TABLE = None


def crc_itu(data):
    """CRC-ITU-T (CCITT, polynomial 0x1021, initial 0): ECMA-167 7.2.6."""
    global _CRC_TABLE
    if _CRC_TABLE is None:
        _CRC_TABLE = _crc_table()
    table = _CRC_TABLE
    crc = 0
    for byte in bytearray(data):
        crc = ((crc << 8) & 0xFFFF) ^ table[(crc >> 8) ^ byte]
    return crc


class _Reader(object):
    """The read callback with the image size and plain checks around it."""

    def __init__(self, read, size):
        self._read = read
        self.size = size

    def __call__(self, offset, length):
        if offset < 0 or length < 0:
            raise MediumError("negative offset or length")
        if self.size is not None and offset + length > self.size:
            raise MediumError("an extent at byte %d (%d bytes) ends beyond the medium (%d bytes)"
                              % (offset, length, self.size))
        data = self._read(offset, length)
        if len(data) != length:
            raise MediumError("short read at byte %d: %d of %d bytes" % (offset, len(data), length))
        return data


# ------------------------------------------------------------------ UDF

_TAG_NAMES = {1: "primary volume", 2: "anchor", 3: "volume pointer", 4: "implementation use",
              5: "partition", 6: "logical volume", 7: "unallocated space", 8: "terminating",
              256: "file set", 257: "file identifier", 261: "file entry", 266: "extended file entry"}


def _tag_problem(buf, location=None, idents=None):
    """None when buf starts with a valid descriptor tag (ECMA-167 3/7.2),
    else why not."""
    if len(buf) < 16:
        return "descriptor shorter than its tag"
    ident = _u16(buf, 0)
    if idents is not None and ident not in idents:
        return "descriptor %d where a %s descriptor belongs" % (
            ident, " or ".join(_TAG_NAMES.get(i, str(i)) for i in idents))
    if (sum(bytearray(buf[0:4])) + sum(bytearray(buf[5:16]))) & 0xFF != bytearray(buf[4:5])[0]:
        return "descriptor tag checksum mismatch"
    crc_len = _u16(buf, 10)
    if 16 + crc_len > len(buf):
        return "descriptor CRC length %d beyond the descriptor" % crc_len
    if crc_itu(buf[16:16 + crc_len]) != _u16(buf, 8):
        return "descriptor CRC mismatch"
    if location is not None and _u32(buf, 12) != location:
        return "descriptor recorded for block %d found at block %d" % (_u32(buf, 12), location)
    return None


def _check_tag(buf, location, idents, where):
    problem = _tag_problem(buf, location, idents)
    if problem:
        raise MediumError("UDF %s: %s" % (where, problem))
    return _u16(buf, 0)


def _vrs(read):
    """Identifiers found in the volume recognition area (ECMA-167 2/8.3)."""
    found = set()
    area = read(_VRS_START, 32 * 2048) if read.size is None or read.size >= _VRS_START + 32 * 2048 \
        else read(_VRS_START, max(0, read.size - _VRS_START) // 2048 * 2048)
    for at in range(0, len(area), 2048):
        ident = area[at + 1:at + 6]
        if ident in (b"BEA01", b"NSR02", b"NSR03", b"TEA01", b"CD001", b"BOOT2", b"CDW02"):
            found.add(ident)
    return found


class _Udf(object):
    def __init__(self, read):
        self.read = read
        self.bs = None
        self.parts = {}        # partition number -> (start block, length in blocks)
        self.maps = []         # partition reference -> ("phys", number) / ("meta", number, file block)
        self.meta_extents = {}  # partition reference -> [(lbn in metadata partition, physical ref, lbn, blocks)]
        self.visited = set()

    # --- volume structure
    def anchor(self):
        size = self.read.size
        for bs in (2048, 512, 1024, 4096):
            candidates = [256]
            if size is not None and size // bs > 257:
                last = size // bs - 1
                candidates += [last, last - 256]
            for block in candidates:
                if size is not None and (block + 1) * bs > size:
                    continue
                buf = self.read(block * bs, 512)
                if _tag_problem(buf, block, (2,)) is None:
                    self.bs = bs
                    return buf
        raise MediumError("UDF: no valid anchor volume descriptor pointer (block 256)")

    def volume(self):
        avdp = self.anchor()
        problems = []
        for at in (16, 24):  # main, then reserve volume descriptor sequence
            length, location = _u32(avdp, at), _u32(avdp, at + 4)
            try:
                return self._sequence(length, location)
            except MediumError as exc:
                problems.append(str(exc))
        raise MediumError(problems[0])

    def _sequence(self, length, location):
        bs = self.bs
        blocks = length // bs
        if blocks < 1 or blocks > VDS_MAX:
            raise MediumError("UDF: volume descriptor sequence of %d bytes" % length)
        parts, lvd = {}, None
        for n in range(blocks):
            block = location + n
            buf = self.read(block * bs, bs)
            ident = _check_tag(buf, block, (1, 3, 4, 5, 6, 7, 8), "volume descriptor sequence")
            if ident == 8:
                break
            if ident == 5:
                parts[_u16(buf, 22)] = (_u32(buf, 188), _u32(buf, 192))
            elif ident == 6:
                lvd = buf
        if lvd is None:
            raise MediumError("UDF: no logical volume descriptor")
        if not parts:
            raise MediumError("UDF: no partition descriptor")
        if _u32(lvd, 212) != bs:
            raise MediumError("UDF: logical block size %d on a medium of %d-byte blocks"
                              % (_u32(lvd, 212), bs))
        self.parts = parts
        count, table_len = _u32(lvd, 268), _u32(lvd, 264)
        if count < 1 or count > 8 or 440 + table_len > bs:
            raise MediumError("UDF: %d partition maps in %d bytes" % (count, table_len))
        at, end = 440, 440 + table_len
        for _ in range(count):
            if at + 2 > end:
                raise MediumError("UDF: partition map table cut short")
            kind, size = bytearray(lvd[at:at + 2])
            if size < 6 or at + size > end:
                raise MediumError("UDF: partition map of %d bytes" % size)
            if kind == 1:
                self.maps.append(("phys", _u16(lvd, at + 4)))
            elif kind == 2 and size >= 64:
                ident = lvd[at + 5:at + 28].rstrip(b"\0")
                number = _u16(lvd, at + 38)
                if ident == b"*UDF Metadata Partition":
                    self.maps.append(("meta", number, _u32(lvd, at + 40)))
                elif ident == b"*UDF Sparable Partition":
                    self.maps.append(("phys", number))  # read as written: no defects to spare
                else:
                    self.maps.append(("unsupported", ident.decode("ascii", "replace").lstrip("*")[:40]))
            else:
                self.maps.append(("unsupported", "type %d" % kind))
            at += size
        return self._long_ad(lvd, 248)  # the file set descriptor's extent

    # --- addresses
    @staticmethod
    def _long_ad(buf, at):
        return _u32(buf, at) & 0x3FFFFFFF, _u32(buf, at + 4), _u16(buf, at + 8)

    def _physical(self, ref, lbn, blocks):
        """Byte offset of blocks lbn..lbn+blocks of partition reference ref."""
        if ref >= len(self.maps):
            raise MediumError("UDF: partition reference %d of %d" % (ref, len(self.maps)))
        entry = self.maps[ref]
        if entry[0] == "unsupported":
            raise MediumError("UDF: partition map %s is not supported" % entry[1])
        if entry[0] == "meta":
            return self._meta(ref, entry, lbn, blocks)
        if entry[1] not in self.parts:
            raise MediumError("UDF: no descriptor for partition %d" % entry[1])
        start, length = self.parts[entry[1]]
        if lbn + blocks > length:
            raise MediumError("UDF: block %d (+%d) beyond partition %d of %d blocks"
                              % (lbn, blocks, entry[1], length))
        return (start + lbn) * self.bs

    def _meta(self, ref, entry, lbn, blocks):
        extents = self.meta_extents.get(ref)
        if extents is None:
            phys = None
            for n, other in enumerate(self.maps):
                if other[0] == "phys" and other[1] == entry[1]:
                    phys = n
            if phys is None:
                raise MediumError("UDF: metadata partition on partition %d without a map" % entry[1])
            _ftype, sized, data = self._entry(phys, entry[2], "metadata file")
            if data is not None:
                raise MediumError("UDF: metadata file embedded in its entry")
            extents, at, left = [], 0, sized[0]
            for eref, elbn, elen in sized[1]:
                if left <= 0:
                    break
                count = (elen + self.bs - 1) // self.bs
                extents.append((at, eref, elbn, count))
                at += count
                left -= elen
            self.meta_extents[ref] = extents
        for first, eref, elbn, count in extents:
            if first <= lbn and lbn + blocks <= first + count:
                if eref is None:
                    raise MediumError("UDF: metadata block %d is not recorded" % lbn)
                return self._physical(eref, elbn + lbn - first, blocks)
        raise MediumError("UDF: block %d outside the metadata partition" % lbn)

    # --- files
    def _entry(self, ref, lbn, what):
        """(file type, [(ref, lbn, bytes)] extents sized to the information
        length, embedded data or None) of the (extended) file entry."""
        if (ref, lbn) in self.visited:
            raise MediumError("UDF: %s: ICB at block %d visited twice (a loop)" % (what, lbn))
        self.visited.add((ref, lbn))
        if len(self.visited) > 4 * DEPTH_MAX:
            raise MediumError("UDF: too many file entries")
        bs = self.bs
        buf = self.read(self._physical(ref, lbn, 1), bs)
        ident = _check_tag(buf, lbn, (261, 266), what)
        strategy, ftype, flags = _u16(buf, 20), bytearray(buf[27:28])[0], _u16(buf, 34)
        if strategy not in (4, 4096):
            raise MediumError("UDF: %s: ICB strategy %d" % (what, strategy))
        info_len = _u64(buf, 56)
        base = 176 if ident == 261 else 216
        ea_len, ad_len = _u32(buf, base - 8), _u32(buf, base - 4)
        if base + ea_len + ad_len > bs:
            raise MediumError("UDF: %s: extended attributes and allocation descriptors "
                              "beyond the entry" % what)
        ads = buf[base + ea_len:base + ea_len + ad_len]
        adtype = flags & 7
        if adtype == 3:
            if info_len > ad_len:
                raise MediumError("UDF: %s: embedded data shorter than its length" % what)
            return ftype, None, bytes(ads[:info_len])
        step = {0: 8, 1: 16}.get(adtype)
        if step is None:
            raise MediumError("UDF: %s: allocation descriptor type %d" % (what, adtype))
        extents = []
        for at in range(0, ad_len - step + 1, step):
            raw = _u32(ads, at)
            length, etype = raw & 0x3FFFFFFF, raw >> 30
            if length == 0:
                break
            if etype == 3:
                raise MediumError("UDF: %s: continued allocation descriptors" % what)
            if len(extents) >= ADS_MAX:
                raise MediumError("UDF: %s: more than %d extents" % (what, ADS_MAX))
            if step == 8:
                eref, elbn = ref, _u32(ads, at + 4)
            else:
                elbn, eref = _u32(ads, at + 4), _u16(ads, at + 8)
            extents.append((eref if etype == 0 else None, elbn, length))
        return ftype, (info_len, extents), None

    def content(self, ref, lbn, limit, what):
        ftype, sized, data = self._entry(ref, lbn, what)
        if data is not None:
            return ftype, data
        info_len, extents = sized
        if info_len > limit:
            raise MediumError("%s: %d bytes, more than %d" % (what, info_len, limit))
        chunks, left = [], info_len
        for eref, elbn, length in extents:
            if not left:
                break
            take = min(length, left)
            blocks = (length + self.bs - 1) // self.bs
            if eref is None:
                chunks.append(bytes(take))
            else:
                chunks.append(self.read(self._physical(eref, elbn, blocks), take))
            left -= take
        if left:
            raise MediumError("UDF: %s: extents hold %d of its %d bytes"
                              % (what, info_len - left, info_len))
        return ftype, b"".join(chunks)

    def root(self, fsd_ad):
        length, lbn, ref = fsd_ad
        buf = self.read(self._physical(ref, lbn, 1), self.bs)
        _check_tag(buf, lbn, (256,), "file set descriptor")
        return self._long_ad(buf, 400)

    def lookup(self, parts, limit):
        length, lbn, ref = self.root(self.volume())
        for n, part in enumerate(parts):
            ftype, data = self.content(ref, lbn, DIR_MAX, "directory")
            if ftype != 4:
                raise MediumError("UDF: %s is not a directory (file type %d)"
                                  % ("/".join(parts[:n]) or "the root", ftype))
            found = None
            for name, child, is_dir in _fids(data):
                if _same_name(name, part):
                    found = child
                    break
            if found is None:
                return None
            length, lbn, ref = found
        ftype, data = self.content(ref, lbn, limit, "/".join(parts))
        if ftype != 5:
            raise MediumError("%s on the medium is not a regular file (%s)" % (
                "/".join(parts), "a directory" if ftype == 4 else "UDF file type %d" % ftype))
        return data


def _fids(data):
    """(name, (length, lbn, ref), is_dir) of each live file identifier
    descriptor in a directory's data (ECMA-167 4/14.4)."""
    at, end = 0, len(data)
    while at + 38 <= end:
        chars, name_len, iu_len = bytearray(data[at + 18:at + 19])[0], \
            bytearray(data[at + 19:at + 20])[0], _u16(data, at + 36)
        total = (38 + iu_len + name_len + 3) & ~3
        if at + 38 + iu_len + name_len > end:
            raise MediumError("UDF directory: file identifier beyond the directory")
        crc_len = _u16(data, at + 10)
        if 16 + crc_len > total:
            raise MediumError("UDF directory: file identifier CRC length %d beyond it" % crc_len)
        problem = _tag_problem(data[at:at + 16 + crc_len], None, (257,))
        if problem:
            raise MediumError("UDF directory: %s" % problem)
        raw = data[at + 38 + iu_len:at + 38 + iu_len + name_len]
        icb = (_u32(data, at + 20) & 0x3FFFFFFF, _u32(data, at + 24), _u16(data, at + 28))
        at += total
        if chars & 0x0C:  # deleted or parent
            continue
        yield _dstring(raw), icb, bool(chars & 0x02)


def _dstring(raw):
    """OSTA compressed Unicode (UDF 2.1.1) -> str; '' for what it cannot be."""
    if not raw:
        return ""
    kind, body = bytearray(raw[:1])[0], raw[1:]
    if kind in (8, 254):
        return body.decode("latin-1")
    if kind in (16, 255):
        return body[:len(body) // 2 * 2].decode("utf-16-be", "replace")
    return ""


def _same_name(found, wanted):
    return found == wanted or found.lower() == wanted.lower()


# ------------------------------------------------------------------ ISO 9660

def _iso_names(raw, joliet):
    name = raw.decode("utf-16-be", "replace") if joliet else raw.decode("latin-1")
    return name.split(";", 1)[0].rstrip(".")


def _iso_match(name, wanted):
    name, wanted = name.lower(), wanted.lower()
    return name == wanted or name == _level1(wanted)


def _level1(name):
    """The name as a strict level 1 writer records it (d-characters)."""
    return "".join(c if c.isalnum() or c == "." else "_" for c in name)


def _iso(read, parts, limit):
    pvd = svd = None
    for n in range(ISO_VD_MAX):
        block = 16 + n
        if read.size is not None and (block + 1) * 2048 > read.size:
            break
        vd = read(block * 2048, 2048)
        if vd[1:6] != b"CD001":
            raise MediumError("ISO 9660: volume descriptor %d has no CD001 identifier" % block)
        kind = bytearray(vd[0:1])[0]
        if kind == 255:
            break
        if kind == 1 and pvd is None:
            pvd = vd
        elif kind == 2 and svd is None and vd[88:91] in (b"%/@", b"%/C", b"%/E"):
            svd = vd
    else:
        raise MediumError("ISO 9660: no volume descriptor set terminator in %d descriptors" % ISO_VD_MAX)
    if pvd is None:
        raise MediumError("ISO 9660: no primary volume descriptor")
    joliet = svd is not None
    vd = svd if joliet else pvd
    bs = _u16(vd, 128)
    if bs not in (512, 1024, 2048):
        raise MediumError("ISO 9660: logical block size %d" % bs)
    blocks = _u32(vd, 80)
    record = vd[156:190]
    for n, part in enumerate(parts):
        if not bytearray(record[25:26])[0] & 0x02:
            raise MediumError("ISO 9660: %s is not a directory" % ("/".join(parts[:n]) or "the root"))
        data = _iso_extent(read, record, bs, blocks, DIR_MAX, "directory")
        found = None
        for name, child in _iso_records(data, joliet):
            if _iso_match(name, part):
                found = child
                break
        if found is None:
            return None
        record = found
    flags = bytearray(record[25:26])[0]
    if flags & 0x02:
        raise MediumError("%s on the medium is a directory" % "/".join(parts))
    if flags & 0x80:
        raise MediumError("ISO 9660: %s is recorded in several extents" % "/".join(parts))
    return _iso_extent(read, record, bs, blocks, limit, "/".join(parts))


def _iso_extent(read, record, bs, blocks, limit, what):
    if bytearray(record[26:27])[0] or bytearray(record[27:28])[0]:
        raise MediumError("ISO 9660: %s is interleaved" % what)
    location, size = _u32(record, 2), _u32(record, 10)
    if size > limit:
        raise MediumError("%s: %d bytes, more than %d" % (what, size, limit))
    ext = bytearray(record[1:2])[0]
    if location + ext + (size + bs - 1) // bs > blocks:
        raise MediumError("ISO 9660: %s extends beyond the volume (%d blocks)" % (what, blocks))
    return read((location + ext) * bs, size)


def _iso_records(data, joliet):
    at, end = 0, len(data)
    while at < end:
        length = bytearray(data[at:at + 1])[0]
        if length == 0:  # the rest of this 2048-byte sector is padding
            at = (at // 2048 + 1) * 2048
            continue
        if length < 34 or at + length > end:
            raise MediumError("ISO 9660: directory record of %d bytes at %d" % (length, at))
        record = data[at:at + length]
        name_len = bytearray(record[32:33])[0]
        if 33 + name_len > length:
            raise MediumError("ISO 9660: directory record name beyond the record")
        raw = record[33:33 + name_len]
        at += length
        if raw in (b"\0", b"\1"):
            continue
        yield _iso_names(raw, joliet), record


# ------------------------------------------------------------------ the core

def read_file(read, size, name=OVF_NAME, limit=FILE_MAX):
    """Bytes of the file ``name`` ('a/b' for a path) on the medium read
    through ``read(offset, length)``; None when the medium has no such file;
    MediumError (one line) when it is not a plausible UDF or ISO 9660 medium,
    the file is too large, or anything on the way is out of bounds."""
    parts = [p for p in name.split("/") if p]
    if not parts or len(parts) > DEPTH_MAX:
        raise MediumError("path %r: 1 to %d components" % (name, DEPTH_MAX))
    reader = _Reader(read, size)
    if size is not None and size < _VRS_START + 2048:
        raise MediumError("%d bytes: too small for UDF or ISO 9660" % size)
    ids = _vrs(reader)
    udf_error = None
    if b"NSR02" in ids or b"NSR03" in ids:
        try:
            return _Udf(reader).lookup(parts, limit)
        except MediumError as exc:
            udf_error = exc
        except (struct.error, IndexError, ValueError, OverflowError) as exc:
            udf_error = MediumError("UDF: malformed structure (%s)" % exc)
    if b"CD001" in ids:
        try:
            return _iso(reader, parts, limit)
        except MediumError as exc:
            raise udf_error or exc
        except (struct.error, IndexError, ValueError, OverflowError) as exc:
            raise udf_error or MediumError("ISO 9660: malformed structure (%s)" % exc)
    if udf_error is not None:
        raise udf_error
    raise MediumError("neither UDF nor ISO 9660 (no NSR02/NSR03 or CD001 at byte %d)" % _VRS_START)


# ------------------------------------------------------------------ the shell

def _udev_candidates():
    """Host block devices that may hold the medium: udev says UDF or ISO
    9660, or a CD-ROM drive udev knows nothing about yet; CD-ROMs first."""
    from azure_firstboot import state as st

    found = []
    try:
        names = sorted(os.listdir("/sys/class/block"))
    except OSError:
        return found
    for name in names:
        try:
            dev = (st.read_text("/sys/class/block/%s/dev" % name, 4096) or "").strip()
            udev = st.read_text("/run/udev/data/b" + dev, 65536) if dev else None
        except OSError:
            continue
        fstype = None
        for line in (udev or "").splitlines():
            if line.startswith("E:ID_FS_TYPE="):
                fstype = line.split("=", 1)[1]
        if fstype in ("udf", "iso9660") or (not fstype and name.startswith("sr")):
            found.append(name)
    return sorted(found, key=lambda n: (not n.startswith("sr"), n))


def candidates(paths):
    """(directory, [names]): /dev and the host's candidate devices, or,
    under --root DIR, DIR/dev and its sr* entries."""
    if paths.is_host:
        return "/dev", _udev_candidates()
    directory = paths("/dev")
    try:
        names = sorted(n for n in os.listdir(directory) if n.startswith("sr"))
    except OSError:
        names = []
    return directory, names


def _open(directory, name, host):
    """fd of directory/name, never following a symbolic link; a block device
    on the host, a regular file under --root; MediumError otherwise."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    finally:
        os.close(dfd)
    mode = os.fstat(fd).st_mode
    if (stat.S_ISBLK(mode) if host else stat.S_ISREG(mode)):
        return fd
    os.close(fd)
    raise MediumError("not a %s" % ("block device" if host else "regular file (an image file under --root)"))


def read_device(directory, name, host):
    """ovf-env.xml (bytes) from one device, None when it holds none;
    MediumError or OSError (no medium in the drive: ENOMEDIUM) otherwise."""
    fd = _open(directory, name, host)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        if not size:
            raise MediumError("empty (no medium in the drive)")

        def read(offset, length):
            chunks, got = [], 0
            while got < length:
                chunk = os.pread(fd, length - got, offset + got)
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
            return b"".join(chunks)

        return read_file(read, size)
    finally:
        os.close(fd)


def read_ovf_env(paths, wait=0.0):
    """(bytes of ovf-env.xml, device path, '') from the first candidate
    device that holds one, or (None, None, why: one line per device joined
    by '; ').  ``wait``: seconds to wait (1 s steps) for a drive to appear
    on the host when there is none yet."""
    import time

    waited = 0.0
    while True:
        directory, names = candidates(paths)
        if names or waited >= wait or not paths.is_host:
            break
        time.sleep(1.0)
        waited += 1.0
    if not names:
        return None, None, ("no CD-ROM drive or UDF/ISO 9660 device" if paths.is_host
                            else "no %s/sr* image file" % directory)
    problems = []
    for name in names:
        device = os.path.join(directory, name)
        try:
            data = read_device(directory, name, paths.is_host)
        except MediumError as exc:
            problems.append("%s: %s" % (device, exc))
            continue
        except OSError as exc:
            problems.append("%s: %s" % (device, exc.strerror or exc))
            continue
        if data is None:
            problems.append("%s: no %s" % (device, OVF_NAME))
            continue
        return data, device, ""
    return None, None, "; ".join(problems)


def eject(device):
    """Open the tray of ``device`` (unlock, then CDROMEJECT).  Returns what
    happened, one line; never raises.  An image file is left alone."""
    try:
        fd = os.open(device, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        return "not ejected: cannot open %s: %s" % (device, exc.strerror or exc)
    try:
        if not stat.S_ISBLK(os.fstat(fd).st_mode):
            return "not ejected: %s is an image file" % device
        import fcntl

        try:
            fcntl.ioctl(fd, CDROM_LOCKDOOR, 0)
        except OSError:
            pass  # no lock on this drive, or not allowed: the eject says what matters
        try:
            fcntl.ioctl(fd, CDROMEJECT, 0)
        except OSError as exc:
            return "not ejected: %s: %s" % (device, exc.strerror or exc)
        return "ejected %s" % device
    finally:
        os.close(fd)

"""Layer generators and an independent oracle for testing pyrun's Rust layer engine.

Holds: an `Entry` description of tar members; a writer (Python's `tarfile`, PAX format) and a raw
ustar/PAX writer and reader for members `tarfile` would not produce the way a test needs; gzip/zstd
compressors; hypothesis strategies for benign layer stacks and hostile layers; a reference model
that applies a stack to a plain directory; tree snapshots to compare trees; an overlay mount helper.

The reference model extracts each member with `tarfile` and `fully_trusted_filter` (owners, modes,
setuid bits and mtimes kept as written, which is what a layer engine must do), only for the benign
stacks generated here. It interprets OCI whiteouts itself: opaque markers first (they empty the
directory of everything lower layers put there), then `.wh.<name>` deletions, then the members in
archive order, replacing whatever is at a member's path unless both are directories. It shares no
code with the engine, so it serves as a differential oracle.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import posixpath
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, TypedDict

import pytest
from hypothesis import strategies as st

Kind = Literal["file", "dir", "symlink", "hardlink", "chardev", "blockdev", "fifo"]
Compression = Literal["none", "gzip", "zstd"]
COMPRESSIONS: tuple[Compression, ...] = ("none", "gzip", "zstd")

WH = ".wh."
OPQ = ".wh..wh..opq"
FIXED_MTIME = 1_700_000_000
OUT = "@OUT@"  # placeholder for the absolute host path of the sentinel `outside` directory

NAMES = ("a", "b", "c", "d", "e")
FILE_MODES = (0o644, 0o600, 0o755, 0o4755, 0o2755, 0o440)
DIR_MODES = (0o755, 0o700, 0o1777, 0o750)
OWNERS = ((0, 0), (1000, 1000), (65534, 65534), (1000, 0), (0, 65534))

# A valid VFS_CAP_REVISION_2 security.capability value: effective flag, CAP_NET_BIND_SERVICE.
CAP_V2_NET_BIND = (
    (0x02000000 | 0x1).to_bytes(4, "little") + (1 << 10).to_bytes(4, "little") + bytes(12)
)

IS_ROOT = os.geteuid() == 0


@dataclass(frozen=True)
class Entry:
    """One tar member. `name` is written as is; `target` is a symlink's or hardlink's linkname."""

    name: str
    kind: Kind = "file"
    data: bytes = b""
    target: str = ""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = FIXED_MTIME
    dev: tuple[int, int] = (0, 0)
    xattrs: tuple[tuple[str, bytes], ...] = ()


Layer = list[Entry]


class Attrs(TypedDict):
    mode: int
    uid: int
    gid: int
    mtime: int


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------

_TARFILE_TYPES: dict[Kind, bytes] = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "chardev": tarfile.CHRTYPE,
    "blockdev": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def layer_tar(entries: Sequence[Entry], *, outside: str | None = None) -> bytes:
    """A PAX tar of `entries`, written by `tarfile`. `@OUT@` in names and targets is replaced
    by `outside` when given."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            if outside is not None:
                e = substitute(e, outside)
            ti = tarfile.TarInfo(e.name)
            ti.type = _TARFILE_TYPES[e.kind]
            ti.mode = e.mode
            ti.uid, ti.gid = e.uid, e.gid
            ti.uname = ti.gname = ""
            ti.mtime = e.mtime
            if e.kind in ("symlink", "hardlink"):
                ti.linkname = e.target
            if e.kind in ("chardev", "blockdev"):
                ti.devmajor, ti.devminor = e.dev
            if e.xattrs:
                ti.pax_headers = {
                    "SCHILY.xattr." + k: v.decode("utf-8", "surrogateescape") for k, v in e.xattrs
                }
            if e.kind == "file":
                ti.size = len(e.data)
                tf.addfile(ti, io.BytesIO(e.data))
            else:
                tf.addfile(ti)
    return buf.getvalue()


def substitute(e: Entry, outside: str) -> Entry:
    return replace(e, name=e.name.replace(OUT, outside), target=e.target.replace(OUT, outside))


def _octal(value: int, width: int) -> bytes:
    return f"{value:0{width - 1}o}".encode() + b"\0"


def pax_records(records: Mapping[str, bytes]) -> bytes:
    """PAX extended header records (`<len> <key>=<value>\\n`, len counting itself)."""
    out = b""
    for key, value in records.items():
        body = b" " + key.encode() + b"=" + value + b"\n"
        n = len(body) + 1
        while len(str(n).encode()) + len(body) != n:
            n = len(str(n).encode()) + len(body)
        out += str(n).encode() + body
    return out


def raw_header(
    name: bytes | str,
    typeflag: bytes,
    *,
    size: int = 0,
    linkname: bytes | str = b"",
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    mtime: int = FIXED_MTIME,
    dev: tuple[int, int] = (0, 0),
) -> bytes:
    """One 512-byte POSIX ustar header; names longer than 100 bytes are cut (use PAX `path`)."""
    name_b = name.encode() if isinstance(name, str) else name
    link_b = linkname.encode() if isinstance(linkname, str) else linkname
    hdr = bytearray(512)
    hdr[0:100] = name_b[:100].ljust(100, b"\0")
    hdr[100:108] = _octal(mode, 8)
    hdr[108:116] = _octal(uid, 8)
    hdr[116:124] = _octal(gid, 8)
    hdr[124:136] = _octal(size, 12)
    hdr[136:148] = _octal(mtime, 12)
    hdr[148:156] = b" " * 8
    hdr[156:157] = typeflag
    hdr[157:257] = link_b[:100].ljust(100, b"\0")
    hdr[257:263] = b"ustar\0"
    hdr[263:265] = b"00"
    hdr[329:337] = _octal(dev[0], 8)
    hdr[337:345] = _octal(dev[1], 8)
    hdr[148:156] = f"{sum(hdr):06o}".encode() + b"\0 "
    return bytes(hdr)


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 512)


def raw_member(
    name: bytes | str,
    typeflag: bytes = b"0",
    data: bytes = b"",
    *,
    pax: Mapping[str, bytes] | None = None,
    linkname: bytes | str = b"",
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    mtime: int = FIXED_MTIME,
    dev: tuple[int, int] = (0, 0),
) -> bytes:
    """A member (optional PAX `x` header, ustar header, padded data) written byte by byte."""
    out = b""
    if pax:
        recs = pax_records(pax)
        out += raw_header(b"PaxHeaders/x", b"x", size=len(recs)) + _pad(recs)
    hdr = raw_header(
        name,
        typeflag,
        size=len(data),
        linkname=linkname,
        mode=mode,
        uid=uid,
        gid=gid,
        mtime=mtime,
        dev=dev,
    )
    return out + hdr + _pad(data)


def raw_tar(*members: bytes) -> bytes:
    return b"".join(members) + b"\0" * 1024


@dataclass
class RawMember:
    name: str
    typeflag: bytes
    magic: bytes
    size: int
    linkname: str
    uname: bytes
    gname: bytes
    pax: dict[str, bytes] = field(default_factory=dict)
    data: bytes = b""


def _parse_pax(buf: bytes) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    pos = 0
    while pos < len(buf):
        sp = buf.index(b" ", pos)
        n = int(buf[pos:sp])
        rec = buf[sp + 1 : pos + n - 1]
        key, _, value = rec.partition(b"=")
        out[key.decode()] = value
        pos += n
    return out


def read_raw(tar_bytes: bytes) -> list[RawMember]:
    """Parse a tar byte by byte: every non-PAX member with its raw header fields and the PAX
    records that applied to it. Fails on GNU long-name members, which a PAX writer never emits."""
    members: list[RawMember] = []
    pos = 0
    pending: dict[str, bytes] = {}
    while pos + 512 <= len(tar_bytes):
        hdr = tar_bytes[pos : pos + 512]
        if hdr == b"\0" * 512:
            break
        size = int(hdr[124:136].rstrip(b"\0 ") or b"0", 8)
        typeflag = hdr[156:157]
        body = tar_bytes[pos + 512 : pos + 512 + size]
        pos += 512 + size + (-size % 512)
        if typeflag == b"x":
            pending.update(_parse_pax(body))
            continue
        if typeflag == b"g":
            continue
        name = hdr[0:100].split(b"\0")[0]
        prefix = hdr[345:500].split(b"\0")[0]
        if prefix:
            name = prefix + b"/" + name
        linkname = hdr[157:257].split(b"\0")[0]
        pax, pending = pending, {}
        if "path" in pax:
            name = pax["path"]
        if "linkpath" in pax:
            linkname = pax["linkpath"]
        if "size" in pax:
            size = int(pax["size"])
        members.append(
            RawMember(
                name=name.decode("utf-8", "surrogateescape"),
                typeflag=typeflag,
                magic=hdr[257:265],
                size=size,
                linkname=linkname.decode("utf-8", "surrogateescape"),
                uname=hdr[265:297].split(b"\0")[0],
                gname=hdr[297:329].split(b"\0")[0],
                pax=pax,
                data=body,
            )
        )
    return members


def compress(data: bytes, compression: Compression, level: int = 3) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, compresslevel=level, mtime=0)
    if compression == "zstd":
        return subprocess.run(
            ["zstd", "-q", "-c", f"-{level}"], input=data, capture_output=True, check=True
        ).stdout
    return data


def decompress(blob: bytes) -> bytes:
    if blob[:2] == b"\x1f\x8b":
        return gzip.decompress(blob)
    if blob[:4] == b"\x28\xb5\x2f\xfd":
        return subprocess.run(
            ["zstd", "-q", "-d", "-c"], input=blob, capture_output=True, check=True
        ).stdout
    return blob


# --------------------------------------------------------------------------------------------
# Strategies: benign stacks
# --------------------------------------------------------------------------------------------


def _under(p: str, q: str) -> bool:
    return p == q or p.startswith(q + "/")


def _parent(p: str) -> str:
    return posixpath.dirname(p)


def _ancestors(p: str) -> list[str]:
    parts = p.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


file_data = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=8), st.integers(512, 20_000)),
)


class _LayerBuilder:
    """Draws one benign layer on top of `lower` (the merged state below: path -> dir|file|symlink)
    and then advances `lower` past it."""

    def __init__(self, draw: st.DrawFn, lower: dict[str, str], varied: bool) -> None:
        self.draw = draw
        self.lower = lower
        self.varied = varied
        self.entries: Layer = []
        self.layer: dict[str, str] = {}  # path -> dir|file|symlink|wh, in this layer
        self.blocked: set[str] = set()  # paths whited out by this layer
        self.opaque: set[str] = set()  # directories this layer makes opaque

    def attrs(self, modes: Sequence[int]) -> Attrs:
        uid, gid = self.draw(st.sampled_from(OWNERS))
        mtime = self.draw(st.integers(0, 4_000_000_000)) if self.varied else FIXED_MTIME
        return {"mode": self.draw(st.sampled_from(modes)), "uid": uid, "gid": gid, "mtime": mtime}

    def rand_path(self) -> str:
        depth = self.draw(st.integers(1, 3))
        return "/".join(self.draw(st.sampled_from(NAMES)) for _ in range(depth))

    def placeable(self, p: str, *, as_dir: bool = False) -> bool:
        if any(_under(p, b) for b in self.blocked):
            return False
        if p in self.layer and not (as_dir and self.layer[p] == "dir"):
            return False
        return all(self.layer.get(a, "dir") == "dir" for a in _ancestors(p))

    def ensure_dirs(self, paths: list[str]) -> None:
        for a in paths:
            if a not in self.layer:
                self.layer[a] = "dir"
                self.entries.append(Entry(a, "dir", **self.attrs(DIR_MODES)))

    def new_path(self) -> str | None:
        p = self.rand_path()
        if not self.placeable(p) or p in self.layer:
            return None
        self.ensure_dirs(_ancestors(p))
        return p

    def op_file(self) -> None:
        if (p := self.new_path()) is not None:
            self.layer[p] = "file"
            self.entries.append(Entry(p, "file", self.draw(file_data), **self.attrs(FILE_MODES)))

    def op_dir(self) -> None:
        if (p := self.new_path()) is not None:
            self.layer[p] = "dir"
            self.entries.append(Entry(p, "dir", **self.attrs(DIR_MODES)))

    def op_symlink(self) -> None:
        if (p := self.new_path()) is None:
            return
        self.layer[p] = "symlink"
        up = "../" * p.count("/")
        target = self.draw(
            st.one_of(
                st.sampled_from(NAMES),
                st.sampled_from([".", up.rstrip("/") or "."]),
                st.sampled_from(NAMES).map(up.__add__),
            )
        )
        self.entries.append(Entry(p, "symlink", target=target, **self.attrs((0o777,))))

    def op_hardlink(self) -> None:
        files = sorted(q for q, k in self.layer.items() if k == "file")
        if not files:
            return
        src = self.draw(st.sampled_from(files))
        if (p := self.new_path()) is None:
            return
        self.layer[p] = "file"
        orig = next(e for e in self.entries if e.name == src)
        self.entries.append(
            replace(orig, name=p, kind="hardlink", target=src, data=b"")
        )  # same inode: same owner, mode and mtime, as tar writers record them

    def op_whiteout(self) -> None:
        cands = sorted(
            p
            for p in self.lower
            if self.placeable(p)
            and not any(_under(q, p) for q in self.layer)
            and not any(_under(p, o) for o in self.opaque)
        )
        if not cands:
            return
        p = self.draw(st.sampled_from(cands))
        self.ensure_dirs(_ancestors(p))
        self.blocked.add(p)
        wh = posixpath.join(_parent(p), WH + posixpath.basename(p))
        self.layer[wh] = "wh"
        self.entries.append(Entry(wh, "file", **self.attrs((0o644,))))

    def op_opaque(self) -> None:
        cands = sorted(
            d
            for d, k in self.lower.items()
            if k == "dir"
            and d not in self.opaque
            and self.placeable(d, as_dir=True)
            and not any(_under(b, d) for b in self.blocked)
        )
        if not cands:
            return
        d = self.draw(st.sampled_from(cands))
        self.ensure_dirs([*_ancestors(d), d])
        self.opaque.add(d)
        marker = d + "/" + OPQ
        self.layer[marker] = "wh"
        self.entries.append(Entry(marker, "file", **self.attrs((0o644,))))

    def build(self, max_ops: int) -> Layer:
        ops = {
            "file": self.op_file,
            "dir": self.op_dir,
            "symlink": self.op_symlink,
            "hardlink": self.op_hardlink,
            "whiteout": self.op_whiteout,
            "opaque": self.op_opaque,
        }
        names = ["file", "file", "dir", "symlink", "hardlink", "whiteout", "opaque"]
        for _ in range(self.draw(st.integers(0, max_ops))):
            ops[self.draw(st.sampled_from(names))]()
        self.advance()
        entries = self.entries
        if self.draw(st.booleans()):  # many tar writers spell names "./a/b" and add "./"
            entries = [
                replace(e, name="./" + e.name, target="./" + e.target if e.target else "")
                if e.kind == "hardlink"
                else replace(e, name="./" + e.name)
                for e in entries
            ]
            if self.draw(st.booleans()):
                entries.insert(0, Entry(".", "dir", **self.attrs(DIR_MODES)))
        return entries

    def advance(self) -> None:
        """Move `lower` past this layer, the way the model applies it."""
        lower = self.lower
        for d in self.opaque:
            for q in [q for q in lower if q.startswith(d + "/")]:
                del lower[q]
        for b in self.blocked:
            for q in [q for q in lower if _under(q, b)]:
                del lower[q]
        for e in self.entries:
            if posixpath.basename(e.name).startswith(WH):
                continue
            kind = "file" if e.kind == "hardlink" else e.kind
            if not (kind == "dir" and lower.get(e.name) == "dir"):
                for q in [q for q in lower if _under(q, e.name)]:
                    del lower[q]
            lower[e.name] = kind


@st.composite
def layer_stacks(
    draw: st.DrawFn, *, max_layers: int = 4, max_ops: int = 8, varied_mtimes: bool | None = None
) -> list[Layer]:
    """A stack of 1..max_layers benign layers, as real image builders write them: every member's
    parent directories are members of the same layer; hardlinks point at an earlier regular file
    of the same layer; `.wh.<name>` only names a path a lower layer left; `.wh..wh..opq` only
    marks a directory that exists below (and may follow siblings it must not delete); no path
    appears twice in a layer; names may be spelled `./a/b`, after a `./` member. Modes include setuid/setgid files and 0o700/0o1777 directories;
    owners 0, 1000 and 65534; mtimes fixed or varied."""
    varied = draw(st.booleans()) if varied_mtimes is None else varied_mtimes
    lower: dict[str, str] = {}
    return [
        _LayerBuilder(draw, lower, varied).build(max_ops)
        for _ in range(draw(st.integers(1, max_layers)))
    ]


# --------------------------------------------------------------------------------------------
# Strategies: hostile layers
# --------------------------------------------------------------------------------------------

ESCAPING_LINK_TARGETS = (
    "/",
    "..",
    "../..",
    "../../..",
    "../outside",
    "/../outside",
    "../../root/outside",
    OUT,
    OUT + "/victim",
    "../outside/victim",
)


def _file(name: str, data: bytes = b"pwned") -> Entry:
    return Entry(name, "file", data, mode=0o666)


def _link(name: str, target: str) -> Entry:
    return Entry(name, "symlink", target=target, mode=0o777)


def _hard(name: str, target: str) -> Entry:
    return Entry(name, "hardlink", target=target)


def _dir(name: str) -> Entry:
    return Entry(name, "dir", mode=0o777)


def _through(link: str, target: str) -> st.SearchStrategy[list[Entry]]:
    """Entries that write through `link` (a symlink to `target`) once it exists. An opaque marker
    through a link to the real `/` is left out: an unconfined engine would empty the host's `/`."""
    entries = [
        _file(f"{link}/pyrun-evil"),
        _file(f"{link}/victim"),
        _file(f"{link}/outside/victim"),
        _file(f"{link}/root/outside/victim"),
        _file(f"{link}/sub/file"),
        _dir(f"{link}/newdir"),
        _dir(f"{link}/sub"),
        _link(f"{link}/sl", "/"),
        _hard(f"{link}/hl", "victim"),
        _file(f"{link}/.wh.victim", b""),
        _file(f"{link}/.wh.sub", b""),
        _file(f"{link}/sub/{OPQ}", b""),
        Entry(f"{link}/cdev", "chardev", dev=(1, 3)),
        Entry(f"{link}/fifo", "fifo"),
    ]
    if target != "/":
        entries.append(_file(f"{link}/{OPQ}", b""))
    return st.lists(st.sampled_from(entries), min_size=1, max_size=3)


@st.composite
def _hostile_move(draw: st.DrawFn) -> list[Entry]:
    move = draw(
        st.sampled_from(
            [
                "dotdot", "absolute", "symlink_parent", "symlink_then_file", "hardlink_escape",
                "hardlink_through_symlink", "dir_then_symlink", "symlink_chain", "wh_escape",
                "odd_names", "hardlink_odd", "benign",
            ]
        )
    )  # fmt: skip
    if move == "dotdot":
        name = draw(
            st.sampled_from(
                [
                    "../pyrun-evil", "../outside/victim", "../outside/evil", "../../above",
                    "a/../../outside/victim", "./../pyrun-evil", "a/b/../../../pyrun-evil", "../outside/sub",
                ]
            )
        )  # fmt: skip
        kind = draw(st.sampled_from(["file", "dir", "symlink", "hardlink", "fifo"]))
        if kind == "file":
            return [_file(name)]
        if kind == "dir":
            return [_dir(name)]
        if kind == "symlink":
            return [_link(name, "/")]
        if kind == "hardlink":
            return [_file("plain", b"x"), _hard(name, "plain")]
        return [Entry(name, "fifo")]
    if move == "absolute":
        name = draw(
            st.sampled_from(
                ["/pyrun-evil", "/outside/victim", OUT + "/victim", OUT + "/pyrun-evil"]
            )
        )
        return [_file(name)]
    if move in ("symlink_parent", "symlink_chain"):
        link = draw(st.sampled_from(["l", "d/l"]))
        pre = [_dir("d")] if link.startswith("d/") else []
        if move == "symlink_chain":
            target = draw(st.sampled_from(ESCAPING_LINK_TARGETS))
            head = [_link("c1", "c2"), _link("c2", target)]
            return pre + head + draw(_through("c1", target))
        target = draw(st.sampled_from(ESCAPING_LINK_TARGETS))
        return [*pre, _link(link, target), *draw(_through(link, target))]
    if move == "symlink_then_file":
        name = draw(st.sampled_from(["f", "victim"]))
        target = draw(st.sampled_from([OUT + "/victim", "../outside/victim", "/../outside/victim"]))
        second = draw(st.sampled_from(["file", "dir", "hardlink", "fifo"]))
        follow = {
            "file": [_file(name)],
            "dir": [_dir(name)],
            "hardlink": [_file("plain"), _hard(name, "plain")],
            "fifo": [Entry(name, "fifo")],
        }[second]
        return [_link(name, target), *follow]
    if move == "hardlink_escape":
        target = draw(
            st.sampled_from(
                ["../outside/victim", OUT + "/victim", "../../root/outside/victim", "/../outside"]
            )
        )
        return [_hard("h", target)]
    if move == "hardlink_through_symlink":
        target = draw(st.sampled_from([OUT, "../outside", "/", ".."]))
        via = draw(st.sampled_from(["l/victim", "l/outside/victim", "l/sub/file"]))
        return [_link("l", target), _hard("h", via)]
    if move == "dir_then_symlink":
        target = draw(st.sampled_from(ESCAPING_LINK_TARGETS))
        return [_dir("d"), _file("d/inner"), _link("d", target), *draw(_through("d", target))]
    if move == "wh_escape":
        name = draw(
            st.sampled_from(
                [
                    "../outside/.wh.victim", "../.wh.outside", ".wh..", ".wh.", "a/.wh..",
                    "../outside/" + OPQ, OUT + "/.wh.victim", "/.wh..", OPQ,
                ]
            )
        )  # fmt: skip
        return [_file(name, b"")]
    if move == "hardlink_odd":
        target = draw(st.sampled_from([".", "..", "d", "self", "", "missing", "c1"]))
        return [_dir("d"), _link("c1", OUT + "/victim"), _hard("self" if target else "h", target)]
    if move == "odd_names":
        name = draw(st.sampled_from([".", "..", "./", "a//b", "./.", "a/./../.."]))
        kind = draw(st.sampled_from(["file", "dir", "symlink"]))
        if kind == "file":
            return [_file(name)]
        return [_dir(name)] if kind == "dir" else [_link(name, OUT)]
    # benign filler, so escapes also happen after normal entries
    return draw(st.sampled_from([[_dir("a")], [_dir("a"), _file("a/f")], [_file("plain", b"p")]]))


@st.composite
def hostile_stacks(draw: st.DrawFn) -> list[Layer]:
    """One or two layers, each a few hostile moves: `..` names, absolute names, symlinks out of the
    tree followed by entries through them, symlink-then-file, hardlinks out of the tree or through
    symlinks, directories replaced by symlinks, whiteouts that escape. Names and targets may hold
    `@OUT@`, the absolute path of the sentinel directory (see `substitute`)."""
    n_layers = draw(st.integers(1, 2))
    layers = [
        [e for mv in draw(st.lists(_hostile_move(), min_size=1, max_size=4)) for e in mv]
        for _ in range(n_layers)
    ]
    if n_layers == 2 and draw(st.booleans()):
        # The second layer writes through a symlink the first one may have left.
        link = draw(st.sampled_from(["l", "d", "c1", "f", "d/l"]))
        layers[1] = draw(_through(link, "/")) + layers[1]
    return layers


# --------------------------------------------------------------------------------------------
# Reference model
# --------------------------------------------------------------------------------------------


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif os.path.lexists(p):
        p.unlink()


def model_apply(root: Path, tar_bytes: bytes) -> None:
    """Apply one (benign) layer to `root` as described in the module docstring."""
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tf:
        members = tf.getmembers()
        for m in members:
            if posixpath.basename(m.name) == OPQ:
                d = root / posixpath.dirname(m.name)
                if d.is_dir() and not d.is_symlink():
                    for child in list(d.iterdir()):
                        _remove(child)
        for m in members:
            base = posixpath.basename(m.name)
            if base.startswith(WH) and base != OPQ:
                _remove(root / posixpath.dirname(m.name) / base[len(WH) :])
        for m in members:
            if posixpath.basename(m.name).startswith(WH):
                continue
            dest = root / m.name
            if os.path.lexists(dest) and not (
                m.isdir() and dest.is_dir() and not dest.is_symlink()
            ):
                _remove(dest)
            tf.extract(m, root, numeric_owner=True, filter=tarfile.fully_trusted_filter)


def model_tree(tars: Sequence[bytes], root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for t in tars:
        model_apply(root, t)
    return root


# --------------------------------------------------------------------------------------------
# Snapshots
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    kind: str
    mode: int
    uid: int
    gid: int
    mtime: int | None  # regular files only
    content: bytes | str | tuple[int, int] | None


@dataclass
class Tree:
    nodes: dict[str, Node]
    links: set[frozenset[str]]  # groups of paths that are one inode (size > 1)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "dir"),
        (stat.S_ISREG, "file"),
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISCHR, "chardev"),
        (stat.S_ISBLK, "blockdev"),
        (stat.S_ISFIFO, "fifo"),
    ):
        if test(mode):
            return name
    return "other"


def _walk(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(root / rel if rel else root) as it:
            for de in it:
                p = posixpath.join(rel, de.name) if rel else de.name
                st_ = de.stat(follow_symlinks=False)
                yield p, st_
                if stat.S_ISDIR(st_.st_mode):
                    stack.append(p)


def snapshot(root: Path, *, mtimes: bool = True) -> Tree:
    """Everything under `root` (not `root` itself): type, permission bits, owner, file bytes
    (digest when long), file mtimes, symlink targets, device numbers, and hardlink groups."""
    nodes: dict[str, Node] = {}
    inodes: dict[tuple[int, int], set[str]] = {}
    for rel, s in _walk(root):
        kind = _kind(s.st_mode)
        content: bytes | str | tuple[int, int] | None = None
        if kind == "file":
            data = (root / rel).read_bytes()
            content = data if len(data) <= 64 else sha256(data).encode()
            inodes.setdefault((s.st_dev, s.st_ino), set()).add(rel)
        elif kind == "symlink":
            content = os.readlink(root / rel)
        elif kind in ("chardev", "blockdev"):
            content = (os.major(s.st_rdev), os.minor(s.st_rdev))
        mtime = int(s.st_mtime) if kind == "file" and mtimes else None
        nodes[rel] = Node(kind, stat.S_IMODE(s.st_mode), s.st_uid, s.st_gid, mtime, content)
    links = {frozenset(g) for g in inodes.values() if len(g) > 1}
    return Tree(nodes, links)


StatKey = tuple[str, int, int, int, int, int, int, bytes | str | None]


def full_stat_snapshot(base: Path, exclude: Path) -> dict[str, StatKey]:
    """Every path under `base` and `base` itself, except the subtree `exclude` (whose own entry
    only records that it is still a directory): type, mode, owner, nlink, mtime_ns, ctime_ns,
    file bytes or symlink target. Anything an extraction changes outside `exclude` shows up."""
    out: dict[str, StatKey] = {}

    def rec(p: Path, rel: str) -> None:
        s = os.lstat(p)
        if p == exclude:
            out[rel] = ("excluded-dir", int(stat.S_ISDIR(s.st_mode)), 0, 0, 0, 0, 0, None)
            return
        content: bytes | str | None = None
        if stat.S_ISREG(s.st_mode):
            content = p.read_bytes()
        elif stat.S_ISLNK(s.st_mode):
            content = os.readlink(p)
        out[rel] = (
            _kind(s.st_mode),
            s.st_mode,
            s.st_uid,
            s.st_gid,
            s.st_nlink,
            s.st_mtime_ns,
            s.st_ctime_ns,
            content,
        )
        if stat.S_ISDIR(s.st_mode):
            for name in sorted(os.listdir(p)):
                rec(p / name, f"{rel}/{name}")

    rec(base, ".")
    return out


# --------------------------------------------------------------------------------------------
# Overlay
# --------------------------------------------------------------------------------------------


@contextmanager
def overlay_view(layers: Sequence[Path], mnt: Path) -> Iterator[Path]:
    """Mount a read-only overlay of `layers` (bottom first) on `mnt`; always unmounted. Overlayfs
    needs two lower directories without an upper one, so an empty bottom layer pads one layer.
    Skips the test when mounting is not permitted."""
    lowers = list(layers)
    if len(lowers) < 2:
        pad = mnt.parent / (mnt.name + ".empty")
        pad.mkdir(exist_ok=True)
        lowers.insert(0, pad)
    opts = "lowerdir=" + ":".join(str(p) for p in reversed(lowers))
    mnt.mkdir(exist_ok=True)
    res = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", opts, str(mnt)], capture_output=True, text=True
    )
    if res.returncode != 0:
        if "permission denied" in res.stderr.lower() or "not permitted" in res.stderr.lower():
            pytest.skip(f"cannot mount overlay (EPERM): {res.stderr.strip()}")
        raise AssertionError(f"mount -t overlay -o {opts} failed: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True, capture_output=True)


# --------------------------------------------------------------------------------------------
# Hostile sandbox
# --------------------------------------------------------------------------------------------


@dataclass
class Sandbox:
    base: Path
    root: Path
    target: Path
    outside: Path

    def snapshot(self) -> dict[str, StatKey]:
        return full_stat_snapshot(self.base, self.target)


def make_sandbox(base: Path) -> Sandbox:
    """base/{above, root/{secret, outside/{victim, sub/file}, target/}}: extraction goes into
    `target`; every other path is a sentinel that must come out of it unchanged."""
    root = base / "root"
    outside = root / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "victim").write_bytes(b"precious")
    (outside / "sub" / "file").write_bytes(b"sub-precious")
    (root / "secret").write_bytes(b"secret")
    (base / "above").write_bytes(b"above")
    target = root / "target"
    target.mkdir()
    for p in (outside / "victim", outside / "sub" / "file", root / "secret", base / "above"):
        os.utime(p, (1_000_000_000, 1_000_000_000))
    return Sandbox(base, root, target, outside)


def assert_one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg, f"empty message from {type(exc).__name__}"
    assert "\n" not in msg, f"message spans lines: {msg!r}"
    return msg

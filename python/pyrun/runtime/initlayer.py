"""The init layer: a small read-only overlay lower on top of an image's layers that holds the
files every container gets bind-mounted over (/etc/hosts, /etc/hostname, /etc/resolv.conf).

Without it the runtime creates those mount targets in each container's upper directory: a copy
of /etc and three empty files, made and deleted again with every container, and taken into a
`commit`. Docker keeps them in a per-container "-init" layer; this one is made once per store
and shared by every container whose image has the same /etc. Its /etc carries the attributes
(mode, owner, times) of the image's own /etc, since the topmost lower's directory is the one a
container sees. An image whose /etc is not a directory (a symlink, or deleted by a whiteout)
gets no init layer, and the runtime makes the targets as before.

Layout: <store>/layers/init/<key>/etc/{hosts,hostname,resolv.conf}, made in tmp/ and renamed
into place, never changed afterwards.
"""

from __future__ import annotations

import os
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyrun.store import Store

NAMES = ("hosts", "hostname", "resolv.conf")
VERSION = 1  # part of the key: a change of the layout makes new directories


def image_etc(lowers: list[str]) -> os.stat_result | bool:
    """The image's /etc as the overlay shows it, from its lower directories (topmost first):
    the stat of the topmost layer's `etc` directory; True when no layer has one; False when it
    is something else (a symlink, a file, a whiteout)."""
    for lower in lowers:
        try:
            st = os.lstat(os.path.join(lower, "etc"))
        except FileNotFoundError:
            try:
                opaque = os.getxattr(lower, "trusted.overlay.opaque", follow_symlinks=False)
            except OSError:
                opaque = b""
            if opaque == b"y":  # the layer hides everything below it
                return True
            continue
        except OSError:
            return False
        return st if stat.S_ISDIR(st.st_mode) else False
    return True


def init_layer(store: Store, lowers: list[str]) -> str | None:
    """The init layer for an image with these lower directories (made on first use), or None
    where the image's /etc rules one out."""
    etc = image_etc(lowers)
    if etc is False:
        return None
    if etc is True:
        mode, uid, gid, times = 0o755, 0, 0, None
        key = f"v{VERSION}-none"
    else:
        assert isinstance(etc, os.stat_result)
        mode, uid, gid = stat.S_IMODE(etc.st_mode), etc.st_uid, etc.st_gid
        times = (etc.st_atime_ns, etc.st_mtime_ns)
        key = f"v{VERSION}-{mode:o}-{uid}-{gid}-{etc.st_mtime_ns}"
    path = store.root / "layers" / "init" / key
    if (path / "etc").is_dir():
        return str(path)
    tmp = store.new_temp(".init")
    try:
        (tmp / "etc").mkdir(parents=True)
        for name in NAMES:
            fd = os.open(tmp / "etc" / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            os.close(fd)
            os.chmod(tmp / "etc" / name, 0o644)  # whatever the umask
        os.chown(tmp / "etc", uid, gid)
        os.chmod(tmp / "etc", mode)
        if times is not None:
            os.utime(tmp / "etc", ns=times)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(tmp, path)
        except OSError:
            if not (path / "etc").is_dir():  # not a concurrent maker's finished layer
                raise
    finally:
        if tmp.exists():
            from pyrun.store.fsutil import remove_tree

            remove_tree(tmp)
    return str(path)

"""What `docker` does with a container's files and processes from the outside: `export` (its
filesystem as a tar), `commit` (its changes as a new image layer), `cp` (both ways, confined
to the container's root), `top` and `stats`."""

from __future__ import annotations

import contextlib
import json
import os
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyrun import oci
from pyrun.errors import PyrunError
from pyrun.reference import Reference
from pyrun.runtime.containers import ACTIVE, Container, ContainerNotRunning
from pyrun.store import ImageRecord, now_rfc3339
from pyrun.store.fsutil import canonical_json
from pyrun.transports.base import Blob, LayerResult, SourceImage, SourceLayer


class CopyError(PyrunError):
    exit_code = 1


@contextlib.contextmanager
def mounted_root(c: Container) -> Iterator[Path]:
    """The container's merged root: mounted already while it runs, else for the duration."""
    if c.status in ACTIVE or os.path.ismount(c.rootfs):
        yield c.rootfs
        return
    c.mount_rootfs(c.image_record())
    try:
        yield c.rootfs
    finally:
        c.unmount_rootfs()


# --- export ------------------------------------------------------------------------------------
def export(c: Container, out: str) -> None:
    """`docker export`: the container's whole filesystem as one uncompressed tar at `out`."""
    from pyrun import _core

    with mounted_root(c) as root:
        _core.create_layer(str(root), out, compression="none")


# --- commit ------------------------------------------------------------------------------------
def _container_config(c: Container, base: dict[str, Any]) -> dict[str, Any]:
    """The image config section the commit gets: the base image's, with what the container
    was run with (command, entrypoint, env, user, workdir, labels)."""
    from pyrun.runtime.spec import merge_env, parse_labels

    cfg = json.loads(json.dumps(base.get("config") or {}))
    opts = c.options
    if opts.get("entrypoint") is not None:
        cfg["Entrypoint"] = [e for e in opts["entrypoint"] if e] or None
        cfg["Cmd"] = opts.get("command") or None
    elif opts.get("command"):
        cfg["Cmd"] = list(opts["command"])
    if opts.get("env"):
        cfg["Env"] = merge_env(list(cfg.get("Env") or []), list(opts["env"]), {})
    if opts.get("user"):
        cfg["User"] = opts["user"]
    if opts.get("workdir"):
        cfg["WorkingDir"] = opts["workdir"]
    labels = parse_labels(list(opts.get("labels") or []))
    if labels:
        cfg["Labels"] = {**(cfg.get("Labels") or {}), **labels}
    return {k: v for k, v in cfg.items() if v is not None}


def commit(
    c: Container,
    names: list[Reference],
    *,
    message: str = "",
    author: str = "",
    changes: list[str] | None = None,
    pause: bool = True,
) -> str:
    """`docker commit`: the container's upper dir as a new layer on top of its image's layers
    (shared, not copied); returns the new manifest digest. A running container is frozen
    while its changes are read (`pause`, Docker's default), so the layer is one moment."""
    from pyrun import _core
    from pyrun.transports.copy import copy_image
    from pyrun.transports.local import StoreDestination
    from pyrun.transports.rootfs import apply_changes

    store = c.store
    base: ImageRecord = c.image_record()
    apply_changes({}, changes or [])  # a bad --change fails before any work
    tmp = store.ensure().new_temp(".commit.tar.gz")
    try:
        freeze = pause and c.state.get("status") == "running" and not c.paused
        if freeze:
            c.pause()
        try:
            # Running and not frozen (--pause=false), the container may change a file while it
            # is read, and the layer writer refuses a file that shrank under it: read again,
            # then say so in one line.
            live = not freeze and c.state.get("status") == "running" and not c.paused
            tries = 3 if live else 1
            for attempt in range(tries):
                try:
                    _core.create_layer(str(c.dir / "upper"), str(tmp), overlay_upper=True)
                    break
                except _core.LayerError as e:
                    if not live:
                        raise
                    if attempt == tries - 1:
                        raise PyrunError(
                            f"commit {c.name}: {e}: the container kept changing its files "
                            "(commit with --pause, the default, to read it frozen)"
                        ) from None
        finally:
            if freeze:
                with contextlib.suppress(PyrunError):
                    c.unpause()
        layers = [
            SourceLayer(Blob(str(store.blob_path(d["digest"]))), d, diff)
            for d, diff in zip(base.layers, base.diff_ids, strict=False)
        ]
        layers.append(SourceLayer(Blob(str(tmp)), None, None))

        def finalize(results: list[LayerResult]) -> tuple[bytes, bytes]:
            created = now_rfc3339()
            config = json.loads(json.dumps(base.config))
            config["created"] = created
            config["config"] = _container_config(c, base.config)
            if author:
                config["author"] = author
            config["rootfs"] = {"type": "layers", "diff_ids": [r.diff_id for r in results]}
            command = " ".join(c.record.get("command") or [])
            config["history"] = [
                *config.get("history", []),
                {
                    "created": created,
                    "created_by": command,
                    **({"comment": message} if message else {}),
                    **({"author": author} if author else {}),
                },
            ]
            apply_changes(config, changes or [])
            config_bytes = canonical_json(config)
            manifest = oci.image_manifest(
                config_bytes, [oci.descriptor(r.media_type, r.digest, r.size) for r in results]
            )
            return canonical_json(manifest), config_bytes

        image = SourceImage(None, oci.OCI_MANIFEST, None, layers, names, finalize)
        dest = StoreDestination(store)
        try:
            digest = copy_image(image, dest, names)
            dest.commit()
        except BaseException:
            dest.abort()
            raise
        return digest
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


# --- cp ----------------------------------------------------------------------------------------
def _in_container_is_dir(root: Path, path: str) -> bool:
    from pyrun.runtime.users import secure_join

    return os.path.isdir(secure_join(str(root), path))


def copy_to(c: Container, src: str, dest: str) -> None:
    """`docker cp SRC CONTAINER:DEST`: SRC (file or directory on the host) lands at DEST, or
    inside DEST when that is a directory. The write goes through the layer extractor, which
    resolves every path inside the container's root (openat2 RESOLVE_IN_ROOT) and never
    follows a symlink out of it."""
    from pyrun import _core

    if not os.path.lexists(src):
        raise CopyError(f"could not find the file {src} on the host")
    if not dest.startswith("/"):
        dest = "/" + dest
    with mounted_root(c) as root:
        into_dir = dest.endswith("/") or _in_container_is_dir(root, dest)
        if dest.endswith("/") and not _in_container_is_dir(root, dest):
            raise CopyError(f"no such directory in the container: {dest}")
        base = os.path.basename(os.path.normpath(src))
        target = os.path.join(dest, base) if into_dir else dest
        arcname = os.path.normpath(target).lstrip("/")
        if not arcname or arcname == ".":
            raise CopyError(f"cannot copy {src} over the container's root")
        tmp = c.store.ensure().new_temp(".cp.tar")
        try:
            with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
                tar.add(src, arcname=arcname)
            _core.extract_layer(str(tmp), str(root), whiteouts="apply")
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def copy_from(c: Container, src: str, dest: str) -> None:
    """`docker cp CONTAINER:SRC DEST`: read SRC in a child process chrooted into the
    container's root (so no path of the container's can lead outside it) as a tar stream,
    and unpack it at DEST (or inside DEST when that is an existing directory)."""
    if not src.startswith("/"):
        src = "/" + src
    into_dir = os.path.isdir(dest)
    base = os.path.basename(os.path.normpath(src)) or "root"
    with mounted_root(c) as root:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the child)
            code = 0
            try:
                os.close(r)
                # No user/group name lookups once chrooted: glibc's NSS would load the
                # container's libnss_*.so into this root process (CVE-2019-14271).
                tarfile.pwd = None  # type: ignore[attr-defined]
                tarfile.grp = None  # type: ignore[attr-defined]
                os.chroot(root)
                os.chdir("/")
                with (
                    os.fdopen(w, "wb") as out,
                    tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar,
                ):
                    tar.add(src, arcname=base)
            except FileNotFoundError:
                code = 2
            except BaseException:
                code = 1
            os._exit(code)
        os.close(w)
        try:
            with os.fdopen(r, "rb") as stream:
                tmp_dir = Path(dest if into_dir else os.path.dirname(os.path.abspath(dest)))
                with tarfile.open(fileobj=stream, mode="r|") as tar:
                    members_seen = False
                    for member in tar:
                        members_seen = True
                        if not into_dir:
                            rest = member.name[len(base) :]
                            member.name = os.path.basename(dest) + rest
                        tar.extract(member, tmp_dir, filter="tar")
                    if not members_seen:
                        raise tarfile.ReadError("empty")
        except tarfile.ReadError:
            pass
        finally:
            _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) == 2:
            raise CopyError(f"could not find the file {src} in container {c.name}")
        if os.waitstatus_to_exitcode(status) != 0:
            raise CopyError(f"copying {src} out of container {c.name} failed")


# --- top and stats -----------------------------------------------------------------------------
def container_pids(c: Container) -> list[int]:
    """Every host pid in the container's pid namespace (the init's)."""
    pid = c.pid if c.status in ACTIVE else None
    if pid is None:
        raise ContainerNotRunning(f"container {c.name} is not running")
    try:
        ns = os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        raise ContainerNotRunning(f"container {c.name} is not running") from None
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{entry}/ns/pid") == ns:
                    pids.append(int(entry))
    return sorted(pids)


def top(c: Container, ps_args: list[str]) -> tuple[list[str], list[list[str]]]:
    """`docker top`: the host's `ps` (default `-ef`) limited to the container's processes."""
    import subprocess

    pids = set(container_pids(c))
    args = ps_args or ["-ef"]
    proc = subprocess.run(["ps", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise PyrunError(f"ps {' '.join(args)}: {proc.stderr.strip() or 'failed'}")
    lines = proc.stdout.splitlines()
    if not lines:
        return [], []
    header = lines[0].split()
    if "PID" not in header:
        raise PyrunError(f"ps {' '.join(args)}: its output has no PID column")
    col = header.index("PID")
    rows = []
    for line in lines[1:]:
        fields = line.split(None, len(header) - 1)
        if len(fields) > col and fields[col].isdigit() and int(fields[col]) in pids:
            rows.append(fields)
    return header, rows


def _proc_cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _mem_total() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def stats(c: Container, interval: float = 0.5) -> dict[str, Any]:
    """One `docker stats --no-stream` sample: CPU % over `interval`, memory (RSS of the
    container's processes) against its limit, network and block I/O, pids."""
    from pyrun.runtime.spec import parse_bytes

    def cpu_now() -> tuple[int, float]:
        total = 0
        for p in container_pids(c):
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += _proc_cpu_ticks(p)
        return total, time.monotonic()

    t0, m0 = cpu_now()
    time.sleep(interval)
    t1, m1 = cpu_now()
    hz = os.sysconf("SC_CLK_TCK")
    cpu = 100.0 * (t1 - t0) / hz / (m1 - m0) if m1 > m0 else 0.0
    pids = container_pids(c)
    rss = rd = wr = 0
    for p in pids:
        with contextlib.suppress(OSError, ValueError), open(f"/proc/{p}/statm") as f:
            rss += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        with contextlib.suppress(OSError, ValueError), open(f"/proc/{p}/io") as f:
            for line in f:
                key, _, val = line.partition(":")
                if key == "read_bytes":
                    rd += int(val)
                elif key == "write_bytes":
                    wr += int(val)
    rx = tx = 0
    with contextlib.suppress(OSError, ValueError), open(f"/proc/{pids[0]}/net/dev") as f:
        for line in f.readlines()[2:]:
            name, _, data = line.partition(":")
            if name.strip() != "lo":
                cols = data.split()
                rx += int(cols[0])
                tx += int(cols[8])
    # The container's own cgroup, when there: what the kernel charges it (page cache too).
    cg = f"pyrun/{c.id}"
    for usage in (
        f"/sys/fs/cgroup/memory/{cg}/memory.usage_in_bytes",
        f"/sys/fs/cgroup/{cg}/memory.current",
    ):
        with contextlib.suppress(OSError, ValueError), open(usage) as fh:
            rss = int(fh.read())
            break
    memory = c.options.get("memory")
    limit = parse_bytes(memory, "--memory") if memory else _mem_total()
    return {
        "ID": c.id,
        "Name": c.name,
        "CPUPerc": cpu,
        "MemUsage": rss,
        "MemLimit": limit,
        "MemPerc": 100.0 * rss / limit if limit else 0.0,
        "NetIO": (rx, tx),
        "BlockIO": (rd, wr),
        "PIDs": len(pids),
    }

"""Containers in the store and their lifecycle.

containers/<id>/ holds `container.json` (what the container is: image, name, options; written
by the CLI at create), `state.json` (what it is doing: status, pid, exit code, times; written
atomically by whoever runs it: the `pyrun-runtime monitor` of a detached container, or the CLI
process of a foreground `run`), the OCI bundle, the overlay's upper/work dirs and the mounted
rootfs, and `container.log` (Docker's json-file format, written by the monitor).

A container whose state says running but whose runner (monitor or CLI, identified by pid and
start time) is gone was killed with it (the runtime sets PR_SET_PDEATHSIG): the next reader
recovers it (kills leftovers, unmounts, removes the cgroup, records exit 137)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from pyrun.errors import APIError, NotFound, PyrunError
from pyrun.runtime.spec import (
    RunOptions,
    build_spec,
    merge_command,
    merge_env,
    parse_labels,
    parse_restart,
    parse_signal,
    user_mounts,
)
from pyrun.store import ImageRecord, Store, now_rfc3339
from pyrun.store.fsutil import atomic_write_json, remove_tree

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pyrun.runtime.template import Sink

_ADJECTIVES = [
    "brave",
    "calm",
    "clever",
    "eager",
    "fancy",
    "gentle",
    "happy",
    "jolly",
    "keen",
    "lucid",
    "merry",
    "nimble",
    "proud",
    "quiet",
    "rapid",
    "shiny",
    "swift",
    "tidy",
    "vivid",
    "witty",
    "zealous",
    "bold",
    "cosy",
    "daring",
]
_NAMES = [
    "babbage",
    "curie",
    "darwin",
    "euler",
    "fermi",
    "galois",
    "hopper",
    "hypatia",
    "kepler",
    "lovelace",
    "maxwell",
    "noether",
    "pascal",
    "ritchie",
    "shannon",
    "thompson",
    "turing",
    "wozniak",
    "yonath",
    "zuse",
    "knuth",
    "lamport",
    "liskov",
    "torvalds",
]


class ContainerNotFound(NotFound):
    exit_code = 1


class ContainerConflict(APIError):
    exit_code = 125


class ContainerNotRunning(APIError):
    exit_code = 1


class ContainerPaused(ContainerConflict):
    """Paused when it should not be, or not paused when it should be (Docker exits 1)."""

    exit_code = 1


class ContainerStartError(APIError):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ExecResult(NamedTuple):
    exit_code: int
    output: Any


STOP_MARKER = "stop-requested"
LOG_NAME = "container.log"
ACTIVE = ("running", "restarting")


def _proc_stat(pid: int) -> tuple[bytes, int] | None:
    """(state letter, start time in ticks) from /proc/PID/stat: with the pid, the start time
    names a process for good (pids are reused)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2 :].split()
        return fields[0], int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def start_time(pid: int) -> int | None:
    st = _proc_stat(pid)
    return st[1] if st else None


def _alive(pid: object, start: object) -> bool:
    """Whether the process `pid` that started at `start` (None/0: unknown) still runs (a
    zombie, exited but not reaped, does not)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    st = _proc_stat(pid)
    if st is None or st[0] == b"Z":
        return False
    return not isinstance(start, int) or start == 0 or st[1] == start


def runtime_binary() -> str:
    """pyrun-runtime: $PYRUN_RUNTIME, else the one installed in the package, else on PATH."""
    explicit = os.environ.get("PYRUN_RUNTIME")
    if explicit:
        return explicit
    here = Path(__file__).resolve().parent.parent / "_bin" / "pyrun-runtime"
    if here.exists():
        return str(here)
    import shutil

    found = shutil.which("pyrun-runtime")
    if found:
        return found
    raise ContainerStartError(
        "pyrun-runtime not found (not in pyrun/_bin nor on PATH): build it with ci/setup.sh", 125
    )


class Container:
    """One container's record and directory."""

    def __init__(self, store: Store, cid: str) -> None:
        self.store = store
        self.id = cid
        self.dir = store.root / "containers" / cid
        self._run_dir: Path | None = None
        self._record: dict[str, Any] | None = None
        self._state: dict[str, Any] | None = None
        # The image record, when the caller has it at hand (create): spares a store lookup.
        self.image: ImageRecord | None = None

    @property
    def run_dir(self) -> Path:
        """The runtime directory (Store.run_root): the OCI bundle (config.json), the /etc files
        it bind-mounts, the pid file and the root's mount point, all made again by a start."""
        if self._run_dir is None:
            self._run_dir = self.store.run_root / self.id
        return self._run_dir

    @property
    def record(self) -> dict[str, Any]:
        """container.json: what the container is (image, name, options)."""
        if self._record is None:
            try:
                self._record = json.loads((self.dir / "container.json").read_bytes())
            except (FileNotFoundError, NotADirectoryError, ValueError):
                raise ContainerNotFound(f"No such container: {self.id}") from None
        return self._record

    def save(self) -> None:
        # A --rm container's record lives for one run: atomic, but not worth an fsync.
        durable = not self.record.get("auto_remove")
        atomic_write_json(self.dir / "container.json", self.record, durable=durable)

    def reload(self) -> None:
        self._record = None
        self._state = None

    @property
    def name(self) -> str:
        return str(self.record["name"])

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.record.get("options") or {})

    # --- state ---------------------------------------------------------------------------
    @property
    def state(self) -> dict[str, Any]:
        """state.json (empty for a container never started); stale state is recovered."""
        if self._state is None:
            self._state = self._read_state()
            if self._state.get("status") in ACTIVE and not self.runner_alive():
                self._recover()
        return self._state

    def _read_state(self) -> dict[str, Any]:
        try:
            data = json.loads((self.dir / "state.json").read_bytes())
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_state(self, **fields: Any) -> None:
        atomic_write_json(self.dir / "state.json", fields, durable=False, pretty=False)
        self._state = fields

    def runner_alive(self) -> bool:
        st = self._state if self._state is not None else self._read_state()
        return _alive(st.get("monitor_pid"), st.get("monitor_start"))

    @property
    def status(self) -> str:
        return str(self.state.get("status", "created"))

    @property
    def paused(self) -> bool:
        """Whether the running container's cgroup is frozen (`pause`)."""
        if self.state.get("status") != "running":
            return False
        from pyrun import _core

        return _core.cgroup_frozen(self.cgroup_path)

    @property
    def cgroup_path(self) -> str:
        return f"/pyrun/{self.id}"

    def _freeze(self, frozen: bool) -> None:
        from pyrun import _core

        try:
            _core.freeze_cgroup(self.cgroup_path, frozen)
        except OSError as e:
            verb = "pause" if frozen else "unpause"
            raise APIError(f"cannot {verb} container {self.name}: {e}") from None

    def pause(self) -> None:
        """Freeze every process of the container (cgroup freezer), as `docker pause`."""
        if self.state.get("status") != "running":
            raise ContainerNotRunning(f"container {self.name} is not running")
        if self.paused:
            raise ContainerPaused(f"container {self.name} is already paused")
        self._freeze(True)

    def unpause(self) -> None:
        if not self.paused:
            raise ContainerPaused(f"container {self.name} is not paused")
        self._freeze(False)

    @property
    def pid(self) -> int | None:
        st = self.state
        if st.get("status") not in ACTIVE:
            return None
        pid = st.get("pid")
        if isinstance(pid, int):
            return pid
        try:
            return int((self.run_dir / "pid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def _recover(self) -> None:
        """The runner died (kill -9): kill what is left, unmount, drop the cgroup, record it."""
        st = self._state or {}
        pid = st.get("pid")
        if isinstance(pid, int) and _alive(pid, st.get("pid_start")):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.release_network()
        self.unmount_rootfs()
        remove_cgroups(f"/pyrun/{self.id}")
        fields = {k: v for k, v in st.items() if k not in ("monitor_pid", "monitor_start")}
        fields.update(
            status="exited",
            exit_code=137,
            finished_at=now_rfc3339(),
            error="the container's monitor died; the container was killed with it",
        )
        with contextlib.suppress(OSError):
            self._write_state(**fields)
        self._state = fields

    # --- filesystem ------------------------------------------------------------------------
    @property
    def rootfs(self) -> Path:
        return self.run_dir / "rootfs"

    @property
    def log_path(self) -> Path:
        return self.dir / LOG_NAME

    def image_record(self) -> ImageRecord:
        from pyrun.errors import ImageNotFound

        if self.image is not None:
            return self.image
        try:
            return self.store.get(str(self.record["image"]))
        except ImageNotFound:
            raise ContainerStartError(
                f"cannot start container {self.name}: its image {self.record.get('image_name')} "
                "is gone",
                125,
            ) from None

    def lowers(self, image: ImageRecord) -> list[str]:
        """The overlay's lower directories, topmost first: the store's init layer for the
        image's /etc (runtime/initlayer.py) where it has one, then the image's layers (an empty
        directory for an image without layers)."""
        from pyrun.runtime.initlayer import init_layer

        lowers = [str(self.store.layer_diff(d)) for d in reversed(image.diff_ids)]
        if not lowers:
            (self.dir / "empty").mkdir(exist_ok=True)
            lowers = [str(self.dir / "empty")]
        init = init_layer(self.store, lowers)
        return lowers if init is None else [init, *lowers]

    def mount_rootfs(self, image: ImageRecord) -> str:
        from pyrun import _core

        for d in ("upper", "work"):
            (self.dir / d).mkdir(exist_ok=True)
        self.rootfs.mkdir(parents=True, exist_ok=True)
        if os.path.ismount(self.rootfs):
            return "mounted"
        # A volatile (--rm) upper mounted before: overlayfs wants its marker gone before it
        # mounts that upper again (`cp`/`export` in the moment before removal).
        if (self.dir / "work" / "work" / "incompat").exists():
            remove_tree(self.dir / "work" / "work" / "incompat")
        lowers = self.lowers(image)
        links = self.store.root / "layers" / "l"
        links.mkdir(exist_ok=True)
        return _core.mount_overlay(
            lowers,
            str(self.rootfs),
            upper=str(self.dir / "upper"),
            work=str(self.dir / "work"),
            links_dir=str(links),
            # --rm: the upper goes with the container, so it is never synced (podman does
            # the same); saves the syncfs that unmounting a durable overlay costs.
            volatile=bool(self.record.get("auto_remove")),
        )

    def unmount_rootfs(self) -> None:
        from pyrun import _core

        with contextlib.suppress(OSError):
            _core.unmount(str(self.rootfs), detach=True)

    def write_bundle(self, image: ImageRecord, *, network: bool = True) -> dict[str, Any]:
        """config.json for a start; `network`: set the container's network up first (released
        by `release_network` when the container is done)."""
        from pyrun.volumes import Volumes

        opts = RunOptions(**self.options)
        volumes = Volumes(self.store)
        anonymous = set(self.record.get("anonymous_volumes") or [])
        made: set[str] = set()

        def volume_path(name: str) -> str:
            _info, new = volumes.create(name, anonymous=name in anonymous)
            if new:
                made.add(name)
            return str(volumes.data(name))

        spec = build_spec(
            image.config.get("config", {}), str(self.rootfs), opts, self.id, volume_path
        )
        spec["root"]["path"] = str(self.rootfs)
        if network:
            self._apply_network(spec, image.config.get("config", {}))
        for m in spec["mounts"]:
            name = m.pop("x-volume", None)
            nocopy = m.pop("x-nocopy", False)
            if name in made and not nocopy:
                _copy_up(self.rootfs, m["destination"], Path(m["source"]))
        atomic_write_json(self.run_dir / "config.json", spec, durable=False, pretty=False)
        return spec

    def _apply_network(self, spec: dict[str, Any], image_cfg: dict[str, Any]) -> None:
        mode = str(self.options.get("network") or "bridge")
        hostname = str(spec.get("hostname") or self.id[:12])
        if mode in ("none", "host"):
            # No bridge: only the /etc files (the network package stays unimported).
            from pyrun.runtime.etcfiles import setup_shared

            if mode == "host" and not self.options.get("hostname"):
                import socket

                hostname = socket.gethostname()

            def gateway() -> str:
                from pyrun.network import Networks

                return Networks(self.store).default().gateway

            try:
                mounts = setup_shared(
                    self.run_dir, self.options, hostname, host_mode=mode == "host", gateway=gateway
                )
            except ValueError as e:
                raise ContainerStartError(str(e), 125) from None
            net: dict[str, Any] = {
                "namespace": {"type": "network"} if mode == "none" else None,
                "mounts": mounts,
                "hostname": hostname,
            }
        else:
            from pyrun.network.attach import setup

            net = setup(
                self.store, self.id, self.name, self.options, self.record, image_cfg, hostname
            )
        linux = spec.setdefault("linux", {})
        namespaces = [n for n in linux.get("namespaces", []) if n.get("type") != "network"]
        if net["namespace"] is not None:
            namespaces.append(net["namespace"])
        linux["namespaces"] = namespaces
        if net["hostname"] != spec.get("hostname"):
            spec["hostname"] = net["hostname"]
            env = spec["process"]["env"]
            spec["process"]["env"] = [
                f"HOSTNAME={net['hostname']}" if e.startswith("HOSTNAME=") else e for e in env
            ]
        taken = {m["destination"] for m in spec["mounts"]}
        spec["mounts"] += [m for m in net["mounts"] if m["destination"] not in taken]

    def release_network(self) -> None:
        """Undo the network setup of the last start (idempotent; nothing to undo without a
        bridge network)."""
        if not self.uses_bridge():
            return
        from pyrun.network.attach import release

        release(self.store, self.id)

    def uses_bridge(self) -> bool:
        mode = str(self.options.get("network") or "bridge")
        return mode not in ("host", "none") and not mode.startswith("container:")

    def bundle_spec(self) -> dict[str, Any]:
        try:
            spec: dict[str, Any] = json.loads((self.run_dir / "config.json").read_bytes())
        except (OSError, ValueError):
            raise ContainerNotRunning(f"container {self.name} has no runtime config") from None
        return spec

    # --- signals and waiting ---------------------------------------------------------------
    def stop_signal(self) -> int:
        sig = self.options.get("stop_signal")
        if not sig:
            with contextlib.suppress(PyrunError, KeyError):
                sig = self.image_record().config.get("config", {}).get("StopSignal")
        return parse_signal(sig) if sig else int(signal.SIGTERM)

    def _mark_stopped(self) -> None:
        with contextlib.suppress(OSError):
            (self.dir / STOP_MARKER).touch()

    def kill(self, sig: int | str = signal.SIGKILL) -> None:
        """Send `sig` to the container's process; a terminating one also keeps the restart
        policy from bringing it back (Docker's "manually stopped")."""
        signum = parse_signal(sig)
        if self.status not in ACTIVE:
            raise ContainerNotRunning(
                f"cannot kill container {self.name}: container is not running"
            )
        if signum in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, self.stop_signal()):
            self._mark_stopped()
        self._signal(signum)

    def _signal(self, signum: int) -> bool:
        st = self.state
        pid = self.pid
        if pid is None or not _alive(pid, st.get("pid_start")):
            return False
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return False
        try:
            if _alive(pid, st.get("pid_start")):  # the pidfd now pins this very process
                signal.pidfd_send_signal(fd, signum)
                if signum in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, self.stop_signal()):
                    # A paused container is thawed so that it can act on the signal (Docker's).
                    with contextlib.suppress(APIError):
                        if self.paused:
                            self._freeze(False)
                return True
        except ProcessLookupError:
            pass
        finally:
            os.close(fd)
        return False

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Until the status is neither running nor restarting and the runner is done."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.005
        while True:
            self._state = None
            if self.status not in ACTIVE and not self.runner_alive():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def stop(self, timeout: float | None = None, signal_: int | str | None = None) -> None:
        """Docker's stop: the stop signal (`signal_`, else the container's), `timeout` seconds
        (the container's --stop-timeout, else 10; -1 = forever), then SIGKILL; waits until
        the container is down."""
        signum = parse_signal(signal_) if signal_ is not None else None  # bad input: nothing done
        if self.status not in ACTIVE:
            self.wait_stopped(5)
            return
        if timeout is None:
            t = self.options.get("stop_timeout")
            timeout = 10 if t is None else t
        self._mark_stopped()
        if self.status == "running":
            self._signal(signum if signum is not None else self.stop_signal())
        if not self.wait_stopped(None if timeout < 0 else timeout):
            self._signal(signal.SIGKILL)
            if not self.wait_stopped(10):
                raise ContainerConflict(f"cannot stop container {self.name}: it does not exit")

    def wait_exit(self, timeout: float | None = None) -> int:
        if not self.wait_stopped(timeout):
            raise ContainerConflict(f"timed out waiting for container {self.name}")
        code = self.state.get("exit_code", 0)
        return int(code) if isinstance(code, int) else 0

    # --- removal ---------------------------------------------------------------------------
    def remove(self, *, force: bool = False, v: bool = False) -> None:
        """Remove the container (force: kill it first); `v` or --rm: its anonymous volumes
        too."""
        if self.status in ACTIVE:
            if not force:
                raise ContainerConflict(
                    f"cannot remove container {self.name}: container is running: "
                    "stop the container before removing or force remove"
                )
            self._mark_stopped()
            self._signal(signal.SIGKILL)
            self.wait_stopped(10)
        else:
            self.wait_stopped(5)  # a monitor may still be finishing (unmount)
        with contextlib.suppress(Exception):
            self.release_network()
        self._discard(v=v)

    def _discard(self, *, v: bool = False, cgroups: bool = True) -> None:
        """Remove a stopped container whose network is released: unmount its root, remove its
        cgroups (unless `cgroups` is False: the runtime removed them when the process was
        reaped), its directory and (`v` or --rm) its anonymous volumes."""
        if os.path.ismount(self.rootfs):
            self.unmount_rootfs()
            if os.path.ismount(self.rootfs):
                raise ContainerConflict(
                    f"cannot remove container {self.name}: its root is still mounted at "
                    f"{self.rootfs}"
                )
        if cgroups:
            remove_cgroups(f"/pyrun/{self.id}")
        anonymous = list(self.record.get("anonymous_volumes") or [])
        # Rename first so a crash mid-removal never leaves a half container that looks whole.
        trash = self.store.new_temp(".container")
        try:
            os.rename(self.dir, trash)
        except FileNotFoundError:
            return  # removed meanwhile (--rm)
        remove_tree(self.run_dir)  # unmounted above
        remove_tree(trash)
        if anonymous and (v or self.record.get("auto_remove")):
            from pyrun.volumes import Volumes

            vols = Volumes(self.store)
            for name in anonymous:
                with contextlib.suppress(PyrunError, OSError):
                    vols.remove(name)

    # --- docker-py's Container -------------------------------------------------------------
    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.record.get("labels") or {})

    @property
    def attrs(self) -> dict[str, Any]:
        """What `pyrun container inspect` prints, in Docker's shape."""
        return inspect(self)

    def start(self) -> None:
        start_detached(self)

    def restart(self, timeout: float | None = None) -> None:
        self.stop(timeout)
        start_detached(self)

    def wait(self, timeout: float | None = None, condition: str = "not-running") -> dict[str, Any]:
        """docker-py's wait: {"StatusCode": exit code, "Error": None or a message}."""
        code = self.wait_exit(timeout)
        err = self.state.get("error")
        return {"StatusCode": code, "Error": {"Message": err} if err else None}

    def logs(
        self,
        stdout: bool = True,
        stderr: bool = True,
        stream: bool = False,
        timestamps: bool = False,
        tail: str | int = "all",
        since: str | float | None = None,
        follow: bool | None = None,
        until: str | float | None = None,
    ) -> Any:
        """The container's output (bytes), or with stream=True an iterator of chunks that
        follows the log until the container stops (follow defaults to stream)."""
        from pyrun.runtime.logs import follow_logs

        pieces = follow_logs(
            self,
            stdout=stdout,
            stderr=stderr,
            timestamps=timestamps,
            tail=tail,
            since=since,
            until=until,
            follow=stream if follow is None else follow,
        )
        if stream:
            return (data for _, data in pieces)
        return b"".join(data for _, data in pieces)

    def exec_run(
        self,
        cmd: str | list[str],
        stdout: bool = True,
        stderr: bool = True,
        privileged: bool = False,
        user: str = "",
        environment: dict[str, str] | list[str] | None = None,
        workdir: str | None = None,
        demux: bool = False,
    ) -> ExecResult:
        """Run `cmd` in the container; (exit_code, output) with output bytes, or with
        demux=True a (stdout, stderr) pair."""
        import shlex
        import tempfile

        args = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
        env = (
            [f"{k}={v}" for k, v in environment.items()]
            if isinstance(environment, dict)
            else list(environment or [])
        )
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            code = exec_in(
                self,
                args,
                user=user or None,
                env=env,
                workdir=workdir,
                privileged=privileged,
                stdio=(out.fileno(), err.fileno()),
            )
            out.seek(0)
            err.seek(0)
            o, e = out.read(), err.read()
        if demux:
            return ExecResult(code, (o if stdout else None, e if stderr else None))
        return ExecResult(code, (o if stdout else b"") + (e if stderr else b""))

    def commit(
        self,
        repository: str | None = None,
        tag: str | None = None,
        message: str = "",
        author: str = "",
        changes: list[str] | str | None = None,
        pause: bool = True,
    ) -> ImageRecord:
        """docker-py's commit: a new image from the container's changes (a running container
        is paused meanwhile unless pause=False)."""
        from pyrun.reference import parse
        from pyrun.runtime.fs import commit

        names = []
        if repository:
            names.append(parse(f"{repository}:{tag}" if tag else repository))
        if isinstance(changes, str):
            changes = [changes]
        digest = commit(self, names, message=message, author=author, changes=changes, pause=pause)
        return self.store.get(digest)

    def top(self, ps_args: str | None = None) -> dict[str, Any]:
        """docker-py's top: {"Titles": [...], "Processes": [[...], ...]}."""
        import shlex

        from pyrun.runtime.fs import top

        titles, rows = top(self, shlex.split(ps_args) if ps_args else [])
        return {"Titles": titles, "Processes": rows}

    def stats(self, stream: bool = False, decode: bool | None = None) -> Any:
        """One sample of CPU, memory, I/O and pids; stream=True: an iterator of samples,
        one a second, until the container stops (docker-py's; `decode` is accepted)."""
        from pyrun.runtime.fs import stats

        if not stream:
            return stats(self)

        def samples() -> Iterator[dict[str, Any]]:
            while True:
                self._state = None  # read it afresh every time
                if self.status not in ACTIVE:
                    return
                try:
                    sample = stats(self, interval=1.0)
                except (IndexError, OSError, ContainerNotRunning):
                    return  # it stopped while being sampled
                yield sample

        return samples()

    def export(self, path: str) -> None:
        """The container's filesystem as an uncompressed tar at `path`."""
        from pyrun.runtime.fs import export

        export(self, path)

    def __repr__(self) -> str:
        return f"<Container: {self.short_id}>"


def _copy_up(rootfs: Path, dest: str, data: Path) -> None:
    """A new volume starts with what the image has at its mount point (Docker's copy-up):
    files, owners, modes and links, read through a symlink-safe path in the root."""
    import subprocess

    from pyrun.runtime.users import secure_join

    src = secure_join(str(rootfs), dest)
    if not os.path.isdir(src) or os.path.islink(src) or any(data.iterdir()):
        return
    proc = subprocess.run(
        ["cp", "-a", "--no-dereference", f"{src}/.", str(data)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise ContainerStartError(
            f"copy the image's {dest} into its new volume: {proc.stderr.strip()}", 125
        )


def remove_cgroups(path: str) -> None:
    """rmdir the container's cgroup in every hierarchy (v2, hybrid unified, each v1 one)."""
    root = Path("/sys/fs/cgroup")
    rel = path.strip("/")
    candidates = [root / rel, root / "unified" / rel]
    with contextlib.suppress(OSError):
        candidates += [d / rel for d in root.iterdir() if d.is_dir() and not d.is_symlink()]
    for d in candidates:
        with contextlib.suppress(OSError):
            d.rmdir()


def new_id() -> str:
    return os.urandom(32).hex()


def new_name(taken: set[str]) -> str:
    """Docker's kind of name (adjective_surname), not yet taken. os.urandom, not the random
    module: importing that costs more than a whole container start's Python work."""

    def pick(words: list[str], byte: int) -> str:
        return words[byte % len(words)]

    for _ in range(1000):
        a, b = os.urandom(2)
        name = f"{pick(_ADJECTIVES, a)}_{pick(_NAMES, b)}"
        if name not in taken:
            return name
    return f"container_{os.urandom(4).hex()}"


def list_containers(store: Store) -> list[Container]:
    cdir = store.ensure().root / "containers"
    out = []
    for meta in cdir.glob("*/container.json"):
        c = Container(store, meta.parent.name)
        with contextlib.suppress(ContainerNotFound):
            _ = c.record
            out.append(c)
    out.sort(key=lambda c: str(c.record.get("created", "")), reverse=True)
    return out


def get_container(store: Store, ref: str) -> Container:
    """By full or short ID, or by name."""
    containers = list_containers(store)
    for c in containers:
        if c.name == ref.lstrip("/") or c.id == ref:
            return c
    hits = [c for c in containers if c.id.startswith(ref)] if ref else []
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise ContainerNotFound(f"multiple containers match {ref!r}: give more of the ID")
    raise ContainerNotFound(f"No such container: {ref}")


def create(
    store: Store,
    image: ImageRecord,
    opts: RunOptions,
    *,
    name: str | None,
    auto_remove: bool,
    image_name: str,
) -> Container:
    if auto_remove and parse_restart(opts.restart)[0] != "no":
        raise ContainerConflict("conflicting options: cannot specify both --restart and --rm")
    taken = {c.name for c in list_containers(store)}
    if name is not None:
        import re

        if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", name):
            raise ContainerConflict(
                f"invalid container name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )
        if name in taken:
            raise ContainerConflict(f'Conflict. The container name "/{name}" is already in use')
    _check_network(store, opts)
    image_cfg = image.config.get("config", {})
    anonymous = _name_anonymous_volumes(opts, image_cfg)
    cid = new_id()
    c = Container(store, cid)
    c.dir.mkdir(parents=True)
    c._record = {
        "id": cid,
        "name": name or new_name(taken),
        "image": image.manifest_digest,
        "image_id": image.id,
        "image_name": image_name,
        "diff_ids": image.diff_ids,
        "created": now_rfc3339(),
        "auto_remove": auto_remove,
        "command": merge_command(image_cfg, opts),
        "labels": {**(image_cfg.get("Labels") or {}), **parse_labels(opts.labels)},
        "anonymous_volumes": anonymous,
        "options": opts.as_dict(),
    }
    c.save()
    c.image = image
    return c


def _check_network(store: Store, opts: RunOptions) -> None:
    """The network exists (Docker refuses to create a container on an unknown one)."""
    mode = opts.network or "bridge"
    if mode in ("host", "none"):
        return
    if mode.startswith("container:"):
        get_container(store, mode.partition(":")[2])
        return
    from pyrun.network import Networks

    Networks(store).get(mode)


def _name_anonymous_volumes(opts: RunOptions, image_cfg: dict[str, Any]) -> list[str]:
    """Give every anonymous volume a name now (`-v /path`, `--mount type=volume` without a
    source, the image's VOLUMEs not mounted otherwise), so restarts reuse the same ones."""
    import posixpath

    from pyrun.volumes import new_anonymous_name

    names: list[str] = []
    volumes = []
    for spec in opts.volumes:
        if ":" not in spec and spec.startswith("/"):
            name = new_anonymous_name()
            names.append(name)
            spec = f"{name}:{spec}"
        volumes.append(spec)
    mounts = []
    for spec in opts.mounts:
        fields = [item.partition("=") for item in spec.split(",")]
        keys = {k for k, _, _ in fields}
        kind = next((v for k, _, v in fields if k == "type"), "volume")
        if kind == "volume" and not keys & {"source", "src"}:
            name = new_anonymous_name()
            names.append(name)
            spec = f"{spec},source={name}"
        mounts.append(spec)
    taken = {posixpath.normpath(m["destination"]) for m in user_mounts(opts)}
    taken |= {posixpath.normpath(t) for t in opts.tmpfs}
    for path in sorted(image_cfg.get("Volumes") or {}):
        if posixpath.normpath(path) not in taken and path.startswith("/"):
            name = new_anonymous_name()
            names.append(name)
            volumes.append(f"{name}:{path}")
    opts.volumes = volumes
    opts.mounts = mounts
    return names


def _runner_fields() -> dict[str, Any]:
    me = os.getpid()
    return {"monitor_pid": me, "monitor_start": start_time(me) or 0}


def run_foreground(
    store: Store,
    image: ImageRecord,
    c: Container,
    opts: RunOptions,
    *,
    stdio: tuple[int, int] | None = None,
    interactive: bool = False,
    template: Sink | None = None,
) -> int:
    """Mount, run to completion in this process with the caller's stdio (or stdout/stderr
    fds `stdio`), record the exit, unmount. `template`: where the run's template goes when
    the run went through and a template can replay it (runtime/template.py)."""
    from pyrun import _core

    try:
        c.mount_rootfs(image)
        c.write_bundle(image)
        started = now_rfc3339()
        c._write_state(status="running", started_at=started, restart_count=0, **_runner_fields())
        recipe = None
        if template is not None:
            from pyrun.runtime import template as templates

            recipe = templates.capture(store, c, image, c.lowers(image), template.inputs)
        try:
            out = _core.run_container(
                str(c.run_dir),
                pid_file=str(c.run_dir / "pid"),
                stdio=stdio,
                details=True,
                interactive=interactive,
                # docker logs shows an attached container's output too (not with --rm).
                log=None if c.record.get("auto_remove") else str(c.log_path),
            )
        except _core.StartError as e:
            message, code = e.args
            c._write_state(status="created", exit_code=code, error=message)
            raise ContainerStartError(str(message), int(code)) from None
        except ValueError as e:
            c._write_state(status="created", exit_code=125, error=str(e))
            raise ContainerStartError(f"invalid container config: {e}", 125) from None
        status = out["exit_code"]
        c._write_state(
            status="exited",
            exit_code=status,
            oom_killed=out["oom_killed"],
            cgroup=out["cgroup"],
            started_at=started,
            finished_at=now_rfc3339(),
            restart_count=0,
        )
        if recipe is not None and template is not None:
            with contextlib.suppress(OSError):
                template.keep(recipe)
        return status
    finally:
        with contextlib.suppress(Exception):
            c.release_network()
        c.unmount_rootfs()
        if c.record.get("auto_remove"):
            # The process is reaped and its cgroups are gone with it (the runtime removes them).
            c._discard(cgroups=False)


def start_detached(c: Container) -> int:
    """Start `c` under a `pyrun-runtime monitor` that outlives this process; returns the
    container's pid once it has exec'd, or raises ContainerStartError (125/126/127)."""
    if c.status in ACTIVE:
        return int(c.pid or 0)
    c.wait_stopped(5)  # a previous monitor may still be finishing
    image = c.image_record()
    with contextlib.suppress(FileNotFoundError):
        (c.dir / STOP_MARKER).unlink()
    c.mount_rootfs(image)
    try:
        c.write_bundle(image)
        name, max_retries = parse_restart(str(c.options.get("restart") or "no"))
        config = {
            "bundle": str(c.run_dir),
            "dir": str(c.dir),
            "run_dir": str(c.run_dir),
            "log": str(c.log_path),
            "restart": {"name": name, "max": max_retries},
            "unmount": str(c.rootfs),
            "stdin": bool(c.options.get("interactive")),
            "remove_to": str(c.store.new_temp(".container"))
            if c.record.get("auto_remove")
            else None,
            # --rm: the anonymous volumes go with the container.
            "remove_also": [
                [str(c.store.root / "volumes" / n), str(c.store.new_temp(".volume"))]
                for n in c.record.get("anonymous_volumes") or []
            ]
            if c.record.get("auto_remove")
            else [],
            "on_exit": [
                sys.executable, "-m", "pyrun.network.attach", "release", str(c.store.root), c.id
            ] if c.uses_bridge() else [],
        }  # fmt: skip
        atomic_write_json(c.dir / "monitor.json", config, durable=False, pretty=False)
        line = _spawn_monitor(c)
    except BaseException:
        with contextlib.suppress(Exception):
            c.release_network()
        c.unmount_rootfs()
        raise
    c._state = None
    word, _, rest = line.partition(" ")
    if word == "ok" and rest.strip().isdigit():
        return int(rest)
    # Not started: the monitor ran its exit hook unless it died first; release again
    # (idempotent).
    with contextlib.suppress(Exception):
        c.release_network()
    if word == "err":
        code, _, message = rest.partition(" ")
        raise ContainerStartError(message.strip(), int(code) if code.isdigit() else 125)
    detail = ""
    with contextlib.suppress(OSError):
        detail = (c.dir / "monitor.log").read_text(errors="replace").strip().splitlines()[-1]
    c.unmount_rootfs()
    raise ContainerStartError(
        f"the container monitor exited without starting the container{': ' + detail if detail else ''}",
        125,
    )


def _spawn_monitor(c: Container) -> str:
    """Run `pyrun-runtime monitor` (it forks and detaches at once) and read its one-line
    report from a pipe: `ok PID` or `err CODE MESSAGE`; "" when it died without one."""
    binary = runtime_binary()
    r, w = os.pipe()
    try:
        os.set_inheritable(w, True)
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
            (
                os.POSIX_SPAWN_OPEN,
                2,
                str(c.dir / "monitor.log"),
                os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                0o644,
            ),
        ]
        argv = [binary, "monitor", "--config", str(c.dir / "monitor.json"), "--report-fd", str(w)]
        try:
            pid = os.posix_spawn(binary, argv, os.environ, file_actions=actions, setsid=True)
        except OSError as e:
            raise ContainerStartError(f"cannot run {binary}: {e.strerror}", 125) from None
        os.close(w)
        w = -1
        os.waitpid(pid, 0)  # the first process exits as soon as it has forked the monitor
        chunks = []
        while True:
            b = os.read(r, 4096)
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks).decode(errors="replace").strip()
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def exec_in(
    c: Container,
    command: list[str],
    *,
    user: str | None = None,
    env: list[str] | None = None,
    workdir: str | None = None,
    privileged: bool = False,
    stdio: tuple[int, int] | None = None,
    tty: bool = False,
    interactive: bool = False,
) -> int:
    """Docker's exec: `command` as a new process of the running container `c`, joining its
    namespaces and cgroups with the container's capabilities, seccomp filter and rlimits;
    returns its exit status."""
    from pyrun import _core
    from pyrun.runtime.users import resolve_user

    if not command:
        raise ContainerConflict("no command specified")
    st = c.state
    pid = c.pid if st.get("status") == "running" else None
    if pid is None or not _alive(pid, st.get("pid_start")):
        raise ContainerNotRunning(f"container {c.name} is not running")
    if c.paused:
        raise ContainerPaused(f"container {c.name} is paused, unpause the container before exec")
    spec = c.bundle_spec()
    process = dict(spec["process"])
    process["args"] = list(command)
    process["terminal"] = tty
    env_extra = ["TERM=xterm"] if tty else []
    if user is not None:
        u = resolve_user(str(c.rootfs), user, list(c.options.get("group_add") or []))
        process["user"] = {
            "uid": u.uid,
            "gid": u.gid,
            **({"additionalGids": u.additional_gids} if u.additional_gids else {}),
        }
    if env or env_extra:
        process["env"] = merge_env(list(process.get("env") or []), env_extra + list(env or []), {})
    if workdir:
        if not workdir.startswith("/"):
            raise ContainerConflict(f"the working directory {workdir!r} must be absolute")
        process["cwd"] = workdir
    linux = dict(spec.get("linux") or {})
    if privileged:
        from pyrun.runtime.spec import host_capabilities

        caps = host_capabilities()
        process["capabilities"] = {"bounding": caps, "effective": caps, "permitted": caps}
        linux.pop("seccomp", None)
    names = {"pid": "pid", "ipc": "ipc", "uts": "uts", "mount": "mnt", "network": "net",
             "cgroup": "cgroup", "user": "user", "time": "time"}  # fmt: skip
    linux["namespaces"] = [
        {"type": ns["type"], "path": f"/proc/{pid}/ns/{names[ns['type']]}"}
        for ns in linux.get("namespaces", [])
        if ns.get("type") in names
    ]
    for key in ("resources", "cgroupsPath", "maskedPaths", "readonlyPaths", "sysctl"):
        linux.pop(key, None)
    exec_spec = {**spec, "process": process, "linux": linux, "mounts": []}
    exec_dir = c.dir / "exec"
    exec_dir.mkdir(exist_ok=True)
    path = exec_dir / f"{os.getpid()}-{os.urandom(4).hex()}.json"
    atomic_write_json(path, exec_spec, durable=False, pretty=False)
    try:
        return _core.exec_container(str(path), pid, stdio=stdio, interactive=interactive)
    except _core.StartError as e:
        message, code = e.args
        raise ContainerStartError(str(message), int(code)) from None
    except ValueError as e:
        raise ContainerStartError(f"invalid exec config: {e}", 125) from None
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


def inspect(c: Container) -> dict[str, Any]:
    """Docker's `container inspect` shape, from the record and the state."""
    rec, st = c.record, c.state
    status = str(st.get("status", "created"))
    paused = c.paused
    opts = c.options
    restart, max_retries = parse_restart(str(opts.get("restart") or "no"))
    spec_path = c.run_dir / "config.json"
    return {
        "Id": c.id,
        "Created": rec.get("created", ""),
        "Path": (rec.get("command") or [""])[0],
        "Args": list(rec.get("command") or [])[1:],
        "State": {
            "Status": "paused" if paused else status,
            "Running": status in ACTIVE,
            "Paused": paused,
            "Restarting": status == "restarting",
            "OOMKilled": bool(st.get("oom_killed")),
            "Dead": False,
            "Pid": (c.pid or 0) if status in ACTIVE else 0,
            "ExitCode": st.get("exit_code", 0),
            "Error": st.get("error", ""),
            "StartedAt": st.get("started_at", "0001-01-01T00:00:00Z"),
            "FinishedAt": st.get("finished_at", "0001-01-01T00:00:00Z"),
        },
        "Image": rec.get("image_id", ""),
        "LogPath": str(c.log_path),
        "Name": "/" + c.name,
        "RestartCount": st.get("restart_count", 0),
        # pyrun's: the cgroup of the last run ("" without limits), the monitor's pid.
        "Cgroup": st.get("cgroup", ""),
        "MonitorPid": st.get("monitor_pid", 0) if status in ACTIVE else 0,
        "Driver": "overlay2",
        "Platform": "linux",
        "HostConfig": {
            "AutoRemove": bool(rec.get("auto_remove")),
            "RestartPolicy": {"Name": restart, "MaximumRetryCount": max_retries},
            "NetworkMode": opts.get("network", "none"),
            "PortBindings": _port_bindings(opts),
            "PublishAllPorts": bool(opts.get("publish_all")),
            "Dns": opts.get("dns") or [],
            "DnsSearch": opts.get("dns_search") or [],
            "DnsOptions": opts.get("dns_option") or [],
            "ExtraHosts": opts.get("extra_hosts") or None,
            "Privileged": bool(opts.get("privileged")),
            "Init": bool(opts.get("init")),
            "ReadonlyRootfs": bool(opts.get("read_only")),
            "CapAdd": opts.get("cap_add") or None,
            "CapDrop": opts.get("cap_drop") or None,
            "Binds": opts.get("volumes") or None,
            "Tmpfs": opts.get("tmpfs") or None,
            "Memory": opts.get("memory") or 0,
            "PidsLimit": opts.get("pids_limit"),
        },
        "GraphDriver": {
            "Name": "overlay2",
            "Data": {
                "UpperDir": str(c.dir / "upper"),
                "WorkDir": str(c.dir / "work"),
                "MergedDir": str(c.rootfs),
            },
        },
        "Config": {
            "Hostname": opts.get("hostname") or c.id[:12],
            "User": opts.get("user") or "",
            "Env": opts.get("env") or [],
            "Cmd": opts.get("command") or None,
            "Image": rec.get("image_name", ""),
            "WorkingDir": opts.get("workdir") or "",
            "Entrypoint": opts.get("entrypoint"),
            "Labels": c.labels,
            "StopSignal": opts.get("stop_signal"),
            "StopTimeout": opts.get("stop_timeout"),
        },
        "BundlePath": str(spec_path.parent),
        "NetworkSettings": _network_settings(c) if status in ACTIVE else _network_settings(None),
        "HostsPath": str(c.run_dir / "hosts"),
        "ResolvConfPath": str(c.run_dir / "resolv.conf"),
        "HostnamePath": str(c.run_dir / "hostname"),
    }


def _port_bindings(opts: dict[str, Any]) -> dict[str, Any]:
    from pyrun.network.ports import docker_ports, parse_publish

    try:
        return docker_ports([m for spec in opts.get("publish") or [] for m in parse_publish(spec)])
    except ValueError:
        return {}


def _network_settings(c: Container | None) -> dict[str, Any]:
    """Docker's NetworkSettings from the running container's endpoints."""
    out: dict[str, Any] = {
        "Bridge": "",
        "SandboxKey": "",
        "Ports": {},
        "IPAddress": "",
        "IPPrefixLen": 0,
        "Gateway": "",
        "MacAddress": "",
        "Networks": {},
    }
    if c is None or not (c.store.root / "networks").is_dir():
        return out
    from pyrun.network import Networks, netns_path
    from pyrun.network.ports import docker_ports

    if c.uses_bridge():
        out["SandboxKey"] = str(netns_path(c.store, c.id))
    for n in Networks(c.store)._records():
        ep = n.endpoint(c.id)
        if ep is None:
            continue
        entry = {
            "NetworkID": n.id,
            "EndpointID": ep.get("endpoint_id", ""),
            "Gateway": ep["gateway"] if ep.get("ifname") == "eth0" or not n.internal else "",
            "IPAddress": ep["ip"],
            "IPPrefixLen": n.prefix,
            "MacAddress": ep.get("mac", ""),
            "Aliases": ep.get("aliases") or None,
        }
        out["Networks"][n.name] = entry
        if ep.get("ifname") == "eth0":
            out.update(
                Bridge=n.bridge,
                IPAddress=ep["ip"],
                IPPrefixLen=n.prefix,
                Gateway=ep["gateway"],
                MacAddress=ep.get("mac", ""),
                Ports=docker_ports(ep.get("ports") or []),
            )
    return out

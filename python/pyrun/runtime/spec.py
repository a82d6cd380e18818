"""Build an OCI runtime-spec config.json for a container from its image config and `run` options,
with Docker's defaults: mounts, masked and read-only paths, namespaces, the 14 default
capabilities, the default seccomp profile, ENTRYPOINT/CMD merging, user and groups from the
image."""

from __future__ import annotations

import json
import os
from typing import Any, ClassVar

from pyrun.errors import PyrunError
from pyrun.runtime.seccomp import ProfileError, convert, default_profile
from pyrun.runtime.users import resolve_user

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

DEFAULT_CAPS = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]

ALL_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
]  # fmt: skip

MASKED_PATHS = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

RLIMITS = {
    "core": "RLIMIT_CORE", "cpu": "RLIMIT_CPU", "data": "RLIMIT_DATA", "fsize": "RLIMIT_FSIZE",
    "locks": "RLIMIT_LOCKS", "memlock": "RLIMIT_MEMLOCK", "msgqueue": "RLIMIT_MSGQUEUE",
    "nice": "RLIMIT_NICE", "nofile": "RLIMIT_NOFILE", "nproc": "RLIMIT_NPROC",
    "rss": "RLIMIT_RSS", "rtprio": "RLIMIT_RTPRIO", "rttime": "RLIMIT_RTTIME",
    "sigpending": "RLIMIT_SIGPENDING", "stack": "RLIMIT_STACK", "as": "RLIMIT_AS",
}  # fmt: skip


class SpecError(PyrunError):
    exit_code = 125


TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    VolumePath = Callable[[str], str]


class RunOptions:
    """What `pyrun run` / `containers.run` take, in Docker's vocabulary. Unknown names raise
    TypeError. (A plain class: importing dataclasses costs the CLI ~10 ms.)"""

    command: list[str]
    entrypoint: list[str] | None
    env: list[str]
    workdir: str | None
    user: str | None
    group_add: list[str]
    hostname: str | None
    read_only: bool
    privileged: bool
    cap_add: list[str]
    cap_drop: list[str]
    security_opt: list[str]
    ulimits: list[str]
    network: str
    tty: bool
    memory: str | int | None
    memory_swap: str | int | None
    cpus: str | float | None
    cpu_shares: int | None
    cpuset_cpus: str | None
    pids_limit: int | None
    volumes: list[str]
    mounts: list[str]
    tmpfs: list[str]
    restart: str
    stop_signal: str | None
    stop_timeout: int | None
    labels: list[str]
    init: bool
    interactive: bool
    network_aliases: list[str]
    publish: list[str]
    publish_all: bool
    dns: list[str]
    dns_search: list[str]
    dns_option: list[str]
    extra_hosts: list[str]
    ip: str | None

    _DEFAULTS: ClassVar[dict[str, Any]] = {
        "command": [],
        "entrypoint": None,
        "env": [],
        "workdir": None,
        "user": None,
        "group_add": [],
        "hostname": None,
        "read_only": False,
        "privileged": False,
        "cap_add": [],
        "cap_drop": [],
        "security_opt": [],
        "ulimits": [],
        "network": "bridge",
        "tty": False,
        "memory": None,
        "memory_swap": None,
        "cpus": None,
        "cpu_shares": None,
        "cpuset_cpus": None,
        "pids_limit": None,
        "volumes": [],
        "mounts": [],
        "tmpfs": [],
        "restart": "no",
        "stop_signal": None,
        "stop_timeout": None,
        "labels": [],
        "init": False,
        "interactive": False,
        "network_aliases": [],
        "publish": [],
        "publish_all": False,
        "dns": [],
        "dns_search": [],
        "dns_option": [],
        "extra_hosts": [],
        "ip": None,
    }

    def __init__(self, **options: Any) -> None:
        unknown = set(options) - set(self._DEFAULTS)
        if unknown:
            raise TypeError(f"unexpected option(s): {', '.join(sorted(unknown))}")
        for name, default in self._DEFAULTS.items():
            value = options.get(name, default)
            setattr(self, name, list(value) if isinstance(value, list) else value)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._DEFAULTS}


_PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")
_TMPFS_DEFAULTS = ["nosuid", "nodev", "noexec"]


def _absolute_target(target: str, spec: str) -> str:
    import posixpath

    if not target.startswith("/"):
        raise SpecError(f"invalid mount config {spec!r}: mount path must be absolute")
    clean = posixpath.normpath(target)
    if clean == "/":
        raise SpecError(f"invalid mount config {spec!r}: cannot mount over /")
    return clean


def _bind(
    source: str, target: str, spec: str, readonly: bool, propagation: str | None
) -> dict[str, Any]:
    import os

    if not os.path.exists(source):
        raise SpecError(f"invalid mount config {spec!r}: bind source path does not exist: {source}")
    options = ["rbind", propagation or "rprivate"]
    if readonly:
        options.append("ro")
    return {
        "destination": _absolute_target(target, spec),
        "type": "bind",
        "source": os.path.realpath(source),
        "options": options,
    }


def _volume_mount(
    name: str | None,
    target: str,
    spec: str,
    readonly: bool,
    nocopy: bool,
    volume_path: VolumePath | None,
) -> dict[str, Any]:
    """A named volume's bind mount; `name` None (anonymous) or no resolver: validation only."""
    from pyrun.volumes import InvalidVolume, check_name

    dest = _absolute_target(target, spec)
    if name is not None:
        try:
            check_name(name)
        except InvalidVolume as e:
            raise SpecError(f"invalid volume specification {spec!r}: {e}") from None
    if volume_path is None or name is None:
        return {"destination": dest, "type": "bind", "source": "/", "options": ["rbind"]}
    options = ["rbind", "rprivate", *(["ro"] if readonly else [])]
    return {
        "destination": dest,
        "type": "bind",
        "source": volume_path(name),
        "options": options,
        "x-volume": name,
        "x-nocopy": nocopy,
    }


def user_mounts(opts: RunOptions, volume_path: VolumePath | None = None) -> list[dict[str, Any]]:
    """`-v SRC:DST[:OPTS]` (SRC a host path or a volume name; `-v DST` an anonymous volume),
    `--mount type=bind|volume|tmpfs,...` and `--tmpfs DST[:OPTS]` as runtime-spec mounts.
    `volume_path(name)` gives a volume's directory (made and filled on first use); volume
    mounts carry "x-volume"/"x-nocopy" keys for the caller, who removes them."""
    import os

    out: list[dict[str, Any]] = []
    for spec in opts.volumes:
        parts = spec.split(":")
        if len(parts) == 1 and parts[0].startswith("/"):
            out.append(_volume_mount(None, parts[0], spec, False, False, volume_path))
            continue
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            raise SpecError(
                f"invalid volume specification {spec!r}: expected /host/path:/container/path[:options]"
            )
        source, target = parts[0], parts[1]
        flags = [f for f in (parts[2].split(",") if len(parts) == 3 else []) if f]
        propagation = None
        nocopy = False
        for f in flags:
            if f in _PROPAGATIONS:
                propagation = f
            elif f == "nocopy":
                nocopy = True
            elif f not in ("ro", "rw", "z", "Z"):
                raise SpecError(f"invalid volume specification {spec!r}: invalid mode {f!r}")
        if not source.startswith("/"):
            out.append(_volume_mount(source, target, spec, "ro" in flags, nocopy, volume_path))
            continue
        os.makedirs(source, exist_ok=True)  # -v creates a missing host directory, as Docker does
        out.append(_bind(source, target, spec, "ro" in flags, propagation))
    for spec in opts.mounts:
        fields: dict[str, str] = {}
        for item in spec.split(","):
            key, eq, value = item.partition("=")
            if key in ("readonly", "ro") and not eq:
                value = "true"
            elif not eq:
                raise SpecError(f"invalid --mount {spec!r}: {item!r} is not KEY=VALUE")
            fields[key.strip()] = value.strip()
        kind = fields.pop("type", "volume")
        target = fields.pop("target", fields.pop("destination", fields.pop("dst", "")))
        if not target:
            raise SpecError(f"invalid --mount {spec!r}: target is required")
        readonly = fields.pop("readonly", fields.pop("ro", "false")) in ("true", "1")
        if kind == "bind":
            source = fields.pop("source", fields.pop("src", ""))
            if not source.startswith("/"):
                raise SpecError(f"invalid --mount {spec!r}: source must be an absolute host path")
            propagation = fields.pop("bind-propagation", None)
            if propagation is not None and propagation not in _PROPAGATIONS:
                raise SpecError(
                    f"invalid --mount {spec!r}: invalid bind-propagation {propagation!r}"
                )
            m = _bind(source, target, spec, readonly, propagation)
        elif kind == "tmpfs":
            options = list(_TMPFS_DEFAULTS)
            if "tmpfs-size" in fields:
                options.append(
                    f"size={parse_bytes(fields.pop('tmpfs-size'), '--mount tmpfs-size')}"
                )
            if "tmpfs-mode" in fields:
                mode = fields.pop("tmpfs-mode")
                if not all(c in "01234567" for c in mode):
                    raise SpecError(f"invalid --mount {spec!r}: tmpfs-mode must be octal")
                options.append(f"mode={mode}")
            if readonly:
                options.append("ro")
            m = {
                "destination": _absolute_target(target, spec),
                "type": "tmpfs",
                "source": "tmpfs",
                "options": options,
            }
        elif kind == "volume":
            name = fields.pop("source", fields.pop("src", "")) or None
            nocopy = fields.pop("volume-nocopy", "false") in ("true", "1", "")
            m = _volume_mount(name, target, spec, readonly, nocopy, volume_path)
        else:
            raise SpecError(
                f"invalid --mount {spec!r}: type {kind!r} is not supported (bind, volume, tmpfs)"
            )
        if fields:
            raise SpecError(
                f"invalid --mount {spec!r}: unknown option(s) {', '.join(sorted(fields))}"
            )
        out.append(m)
    for spec in opts.tmpfs:
        target, _, extra = spec.partition(":")
        options = list(_TMPFS_DEFAULTS) + [o for o in extra.split(",") if o]
        out.append(
            {
                "destination": _absolute_target(target, spec),
                "type": "tmpfs",
                "source": "tmpfs",
                "options": options,
            }
        )
    seen: set[str] = set()
    for m in out:
        if m["destination"] in seen:
            raise SpecError(f"duplicate mount point: {m['destination']}")
        seen.add(m["destination"])
    # Parents before children, as Docker orders them.
    out.sort(key=lambda m: m["destination"].count("/"))
    return out


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_bytes(text: str | int, flag: str) -> int:
    """Docker's RAMInBytes: "512k", "8m", "1g", "1.5g", "1024" (bytes); "-1" = unlimited."""
    if isinstance(text, int):
        return text
    import re

    m = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*", str(text).lower())
    if not m:
        raise SpecError(f'invalid argument {text!r} for "{flag}" flag: invalid size: {text!r}')
    value = float(m.group(1)) if "." in m.group(1) else int(m.group(1))
    if value == -1:
        return -1
    if value < 0:
        raise SpecError(f'invalid argument {text!r} for "{flag}" flag: invalid size: {text!r}')
    return int(value * _UNITS[m.group(2)])


def _cpuset_ok(text: str) -> bool:
    import re

    return bool(re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", text))


_RESTART_POLICIES = ("no", "on-failure", "always", "unless-stopped")


def parse_restart(text: str) -> tuple[str, int]:
    """Docker's --restart: no | on-failure[:MAX] | always | unless-stopped -> (name, max)."""
    name, sep, count = (text or "no").partition(":")
    if name not in _RESTART_POLICIES:
        raise SpecError(
            f"invalid restart policy {text!r}: expected one of no, on-failure[:max-retries], "
            "always, unless-stopped"
        )
    if not sep:
        return name, 0
    if name != "on-failure":
        raise SpecError(
            f"invalid restart policy {text!r}: maximum retry count cannot be used with {name}"
        )
    if not count.isdigit():
        raise SpecError(
            f"invalid restart policy {text!r}: maximum retry count must be a number >= 0"
        )
    return name, int(count)


def parse_signal(text: str | int) -> int:
    """A signal by number, or by name with or without SIG ("TERM", "SIGKILL", "9")."""
    import signal

    raw = str(text).strip()
    if raw.isdigit():
        n = int(raw)
        if 0 < n < signal.NSIG:
            return n
    else:
        name = raw.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        sig = getattr(signal.Signals, name, None) if name.isidentifier() else None
        if sig is not None:
            return int(sig)
    raise SpecError(f"invalid signal: {text}")


def parse_labels(labels: list[str]) -> dict[str, str]:
    out = {}
    for item in labels:
        key, _, value = item.partition("=")
        if not key:
            raise SpecError(f"invalid label {item!r}: empty name")
        out[key] = value
    return out


def validate(opts: RunOptions) -> None:
    """Check the options that do not need the image, so bad input fails before a container
    is created (SpecError, one line)."""
    parse_restart(opts.restart)
    if opts.stop_signal is not None:
        parse_signal(opts.stop_signal)
    if opts.stop_timeout is not None and opts.stop_timeout < -1:
        raise SpecError(f"invalid --stop-timeout {opts.stop_timeout}: must be -1 or more")
    parse_labels(opts.labels)
    capabilities(opts)
    for u in opts.ulimits:
        parse_ulimit(u)
    resources_section(opts)
    user_mounts(opts)
    validate_network(opts)


def validate_network(opts: RunOptions) -> None:
    """Docker's checks of --network, -p, --add-host, --dns and --ip (no state needed)."""
    mode = opts.network or ""
    if not mode or mode == "container:":
        raise SpecError(
            f"invalid --network {mode!r}: a network name or bridge|host|none|container:NAME"
        )
    shared = mode in ("host", "none") or mode.startswith("container:")
    if opts.publish:
        from pyrun.network.ports import PortError, parse_publish

        for spec in opts.publish:
            try:
                parse_publish(spec)
            except PortError as e:
                raise SpecError(str(e)) from None
    if shared and (opts.publish or opts.publish_all) and mode != "none":
        raise SpecError(
            f"conflicting options: port publishing and the {mode.partition(':')[0]} network mode"
        )
    if mode.startswith("container:") and (opts.hostname or opts.dns or opts.extra_hosts):
        raise SpecError(
            "conflicting options: --hostname, --dns and --add-host and the container network mode"
        )
    if opts.ip is not None and shared:
        raise SpecError("--ip needs a bridge network")
    if opts.network_aliases and shared:
        raise SpecError("--network-alias needs a user-defined network")
    from pyrun.runtime.etcfiles import parse_add_host

    try:
        for h in opts.extra_hosts:
            parse_add_host(h)
    except ValueError as e:
        raise SpecError(str(e)) from None
    addrs = [*opts.dns, *([opts.ip] if opts.ip else [])]
    if addrs:
        import socket

    for addr in addrs:
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in addr else socket.AF_INET, addr)
        except OSError:
            raise SpecError(f"invalid IP address {addr!r}") from None


def swap_limit_supported() -> bool:
    """Whether the kernel accounts swap per cgroup (Docker's SwapLimit): v1's memsw files,
    or memory.swap.max in the unified hierarchy's cgroups."""
    import glob

    root = "/sys/fs/cgroup"
    if os.path.exists(f"{root}/memory/memory.memsw.limit_in_bytes"):
        return True
    if os.path.exists(f"{root}/cgroup.controllers"):
        return bool(glob.glob(f"{root}/*/memory.swap.max"))
    return False


def resources_section(opts: RunOptions) -> dict[str, Any] | None:
    """`linux.resources` for -m/--memory-swap/--cpus/--cpu-shares/--cpuset-cpus/--pids-limit,
    with Docker's validation; None when no limit was asked for."""
    res: dict[str, Any] = {}
    memory = None
    if opts.memory is not None:
        memory = parse_bytes(opts.memory, "--memory")
        if memory != -1 and 0 < memory < 6 * 1024 * 1024:
            raise SpecError("Minimum memory limit allowed is 6MB")
        if memory > 0:
            res.setdefault("memory", {})["limit"] = memory
    if opts.memory_swap is not None:
        swap = parse_bytes(opts.memory_swap, "--memory-swap")
        if not memory or memory <= 0:
            raise SpecError(
                "You should always set the Memory limit when using Memoryswap limit, see usage."
            )
        if swap != -1 and swap != 0:
            if swap < memory:
                raise SpecError(
                    "Minimum memoryswap limit should be larger than memory limit, see usage."
                )
            res["memory"]["swap"] = swap
        elif swap == -1:
            res["memory"]["swap"] = -1
        elif swap == 0 and memory > 0 and swap_limit_supported():
            res["memory"]["swap"] = memory * 2
    elif memory and memory > 0 and swap_limit_supported():
        # Docker's default: as much swap as memory (memory + swap = twice the limit).
        res["memory"]["swap"] = memory * 2
    cpu: dict[str, Any] = {}
    if opts.cpus is not None:
        try:
            cpus = float(opts.cpus)
        except ValueError:
            raise SpecError(
                f'invalid argument {opts.cpus!r} for "--cpus" flag: failed to parse '
                f"{opts.cpus!r} as a rational number"
            ) from None
        if cpus < 0 or cpus != cpus:
            raise SpecError(f'invalid argument {opts.cpus!r} for "--cpus" flag: range must be >= 0')
        ncpu = os.cpu_count() or 1
        if cpus > ncpu:
            raise SpecError(
                f"range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available"
            )
        if cpus > 0:
            cpu["quota"] = round(cpus * 100000)
            cpu["period"] = 100000
    if opts.cpu_shares:
        if isinstance(opts.cpu_shares, bool) or int(opts.cpu_shares) < 0:
            raise SpecError(f"invalid --cpu-shares {opts.cpu_shares!r}: must be >= 0")
        cpu["shares"] = int(opts.cpu_shares)
    if opts.cpuset_cpus:
        if not _cpuset_ok(opts.cpuset_cpus):
            raise SpecError(f"Invalid value {opts.cpuset_cpus} for cpuset cpus: invalid format")
        cpu["cpus"] = opts.cpuset_cpus
    if cpu:
        res["cpu"] = cpu
    if opts.pids_limit is not None and int(opts.pids_limit) > 0:
        res["pids"] = {"limit": int(opts.pids_limit)}
    return res or None


def _cap_name(name: str) -> str:
    n = name.upper()
    n = n if n.startswith("CAP_") else f"CAP_{n}"
    if n != "CAP_ALL" and n not in ALL_CAPS:
        raise SpecError(f"invalid capability {name!r}: unknown capability")
    return n


def host_capabilities() -> list[str]:
    """The capabilities this process can hand on (its bounding set): what --privileged grants.
    A sandboxed engine may lack some (e.g. CAP_SYS_RESOURCE), and capset would refuse them."""
    try:
        with open("/proc/self/status") as f:
            line = next(x for x in f if x.startswith("CapBnd:"))
        mask = int(line.split()[1], 16)
    except (OSError, StopIteration, ValueError):
        return list(ALL_CAPS)
    return [c for i, c in enumerate(ALL_CAPS) if mask >> i & 1]  # ALL_CAPS is in kernel order


def capabilities(opts: RunOptions) -> list[str]:
    caps = list(host_capabilities() if opts.privileged else DEFAULT_CAPS)
    drops = [_cap_name(c) for c in opts.cap_drop]
    adds = [_cap_name(c) for c in opts.cap_add]
    if "CAP_ALL" in drops:
        caps = []
    caps = [c for c in caps if c not in drops]
    if "CAP_ALL" in adds:
        caps = list(ALL_CAPS)
    caps += [c for c in adds if c != "CAP_ALL" and c not in caps]
    return caps


def parse_ulimit(text: str) -> dict[str, Any]:
    """`nofile=1024[:2048]` -> a runtime-spec rlimit."""
    name, eq, values = text.partition("=")
    if not eq or name not in RLIMITS:
        raise SpecError(
            f"invalid ulimit {text!r}: expected NAME=SOFT[:HARD] with NAME one of {', '.join(RLIMITS)}"
        )
    soft, _, hard = values.partition(":")
    try:
        s = -1 if soft == "-1" else int(soft)
        h = s if not hard else (-1 if hard == "-1" else int(hard))
    except ValueError:
        raise SpecError(f"invalid ulimit {text!r}: limits must be integers") from None
    unlimited = 2**64 - 1
    s = unlimited if s == -1 else s
    h = unlimited if h == -1 else h
    if s > h:
        raise SpecError(f"invalid ulimit {text!r}: soft limit {s} exceeds hard limit {h}")
    return {"type": RLIMITS[name], "soft": s, "hard": h}


# The default profile for a capability set, converted once per process (0.5 ms each time).
_DEFAULT_SECCOMP: dict[tuple[str, ...], dict[str, Any]] = {}


def seccomp_section(option: str | None, caps: list[str]) -> dict[str, Any] | None:
    """`linux.seccomp` for `--security-opt seccomp=OPTION`: the default profile when None,
    nothing for "unconfined", else the Docker-format profile file OPTION."""
    if option is None:
        key = tuple(caps)
        cached = _DEFAULT_SECCOMP.get(key)
        if cached is None:
            cached = _DEFAULT_SECCOMP[key] = default_profile(caps)
        return cached  # shared: build_spec's callers serialise it, never change it
    if option == "unconfined":
        return None
    try:
        with open(option, "rb") as f:
            profile = json.load(f)
    except OSError as e:
        raise SpecError(f"opening seccomp profile ({option}) failed: {e.strerror}") from None
    except ValueError as e:
        raise SpecError(f"seccomp profile {option}: invalid JSON: {e}") from None
    try:
        return convert(profile, caps)
    except ProfileError as e:
        raise SpecError(f"seccomp profile {option}: {e}") from None


def merge_command(image_cfg: dict[str, Any], opts: RunOptions) -> list[str]:
    """Docker's rule: --entrypoint replaces ENTRYPOINT and drops the image's CMD; arguments
    after the image replace CMD."""
    if opts.entrypoint is not None:
        entry = [e for e in opts.entrypoint if e != ""]
        cmd = opts.command
    else:
        entry = list(image_cfg.get("Entrypoint") or [])
        cmd = opts.command or list(image_cfg.get("Cmd") or [])
    args = entry + cmd
    if not args:
        raise SpecError("no command specified")
    return args


def merge_env(image_env: list[str], extra: list[str], defaults: dict[str, str]) -> list[str]:
    env: dict[str, str] = {}
    for item in image_env:
        k, _, v = item.partition("=")
        env[k] = v
    for item in extra:
        k, eq, v = item.partition("=")
        if not k:
            raise SpecError(f"invalid environment variable {item!r}")
        if not eq:
            import os

            if k not in os.environ:
                continue
            v = os.environ[k]
        env[k] = v
    for k, v in defaults.items():
        env.setdefault(k, v)
    return [f"{k}={v}" for k, v in env.items()]


def build_spec(
    image_cfg: dict[str, Any],
    rootfs: str,
    opts: RunOptions,
    container_id: str,
    volume_path: VolumePath | None = None,
) -> dict[str, Any]:
    """config.json for the container; `rootfs` is the mounted root (used to resolve the user)."""
    user = resolve_user(
        rootfs,
        opts.user if opts.user is not None else str(image_cfg.get("User") or ""),
        opts.group_add,
    )
    hostname = opts.hostname or container_id[:12]
    env = merge_env(
        list(image_cfg.get("Env") or []),
        opts.env,
        {
            "PATH": DEFAULT_PATH,
            "HOSTNAME": hostname,
            "HOME": user.home or "/",
            **({"TERM": "xterm"} if opts.tty else {}),
        },
    )
    # PATH and HOSTNAME lead, as in Docker's containers.
    env.sort(key=lambda e: (not e.startswith("PATH="), not e.startswith("HOSTNAME=")))
    caps = capabilities(opts)
    nnp = False
    seccomp_opt: str | None = None
    for o in opts.security_opt:
        key, sep, value = o.partition("=")
        if not sep:
            key, sep, value = o.partition(":")
        if key == "no-new-privileges" and value in ("", "true", "false"):
            nnp = value != "false"
        elif key == "seccomp" and value:
            seccomp_opt = value
        else:
            raise SpecError(
                f"invalid --security-opt {o!r}: not supported yet "
                "(only no-new-privileges and seccomp=unconfined|PROFILE.json)"
            )
    seccomp = None if opts.privileged else seccomp_section(seccomp_opt, caps)
    process: dict[str, Any] = {
        "terminal": opts.tty,
        "user": {
            "uid": user.uid,
            "gid": user.gid,
            **({"additionalGids": user.additional_gids} if user.additional_gids else {}),
        },
        "args": merge_command(image_cfg, opts),
        "env": env,
        "cwd": opts.workdir or image_cfg.get("WorkingDir") or "/",
        "capabilities": {
            "bounding": caps,
            "effective": caps,
            "permitted": caps,
            # Docker raises ambient capabilities only for non-root users (so they keep them).
            **({"ambient": caps, "inheritable": caps} if user.uid != 0 else {}),
        },
        "noNewPrivileges": nnp,
    }
    if opts.ulimits:
        process["rlimits"] = [parse_ulimit(u) for u in opts.ulimits]
    if not process["cwd"].startswith("/"):
        raise SpecError(
            f"the working directory {process['cwd']!r} is invalid: it needs to be an absolute path"
        )
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount", "cgroup")]
    if opts.network != "host":
        # A new namespace here; the container's network setup points it at the namespace it
        # made (bridge), or at another container's (container:NAME).
        namespaces.append({"type": "network"})
    ro_sys = [] if opts.privileged else ["ro"]
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", *ro_sys]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", *ro_sys]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    ]  # fmt: skip
    mounts += user_mounts(opts, volume_path)
    linux: dict[str, Any] = {"namespaces": namespaces}
    if seccomp is not None:
        linux["seccomp"] = seccomp
    resources = resources_section(opts)
    if resources is not None:
        linux["resources"] = resources
    # Every container gets a cgroup of its own, limits or not (as Docker does): its processes
    # are counted there, its cgroup namespace is rooted there, and it goes with the container.
    linux["cgroupsPath"] = f"/pyrun/{container_id}"
    if not opts.privileged:
        linux["maskedPaths"] = MASKED_PATHS
        linux["readonlyPaths"] = READONLY_PATHS
    return {
        "ociVersion": "1.2.0",
        "process": process,
        "root": {"path": "rootfs", "readonly": opts.read_only},
        "hostname": hostname,
        "mounts": mounts,
        "linux": linux,
        "annotations": {
            "io.pyrun.container.id": container_id,
            **({"io.pyrun.init": "true"} if opts.init else {}),
        },
    }

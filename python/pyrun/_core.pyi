"""Type stubs for pyrun's Rust extension (rust/lib.rs). Every function releases the GIL."""

from typing import Literal, TypedDict, overload

__version__: str

class LayerError(Exception):
    """A layer could not be read or extracted: corrupt or truncated stream, an entry that would
    escape the target directory, a digest mismatch. The message names the entry and the cause."""

class ExtractResult(TypedDict):
    digest: str  # "sha256:<hex>" of the bytes read (the compressed blob)
    diff_id: str  # "sha256:<hex>" of the uncompressed tar stream
    size: int  # bytes read (compressed size)
    uncompressed_size: int
    compression: Literal["gzip", "zstd", "none"]
    entries: int  # entries created (whiteouts, opaque markers and skipped entries not counted)
    warnings: list[str]  # e.g. device nodes skipped for lack of CAP_MKNOD

class RunDetails(TypedDict):
    exit_code: int  # exit code, or 128+signal
    oom_killed: bool  # the OOM killer killed a process of the container's cgroup
    cgroup: str  # the cgroup path ("/pyrun/<id>"), "" when none was created

class LayerResult(TypedDict):
    digest: str
    diff_id: str
    size: int
    uncompressed_size: int
    entries: int

def detect_compression(header: bytes) -> Literal["gzip", "zstd", "none"]:
    """Compression of a stream from its first bytes (magic numbers)."""

def extract_layer(
    src: str | int,
    dest: str,
    *,
    offset: int = 0,
    length: int | None = None,
    blob_out: str | None = None,
    expect_digest: str | None = None,
    expect_diff_id: str | None = None,
    whiteouts: Literal["overlay", "apply"] = "overlay",
) -> ExtractResult:
    """Read a layer (plain, gzip or zstd tar; detected by magic) from a path or an open fd,
    optionally only `length` bytes from `offset`, in one pass: hash the raw bytes, decompress,
    hash the tar (DiffID), and extract it under `dest` (an existing directory), confined with
    openat2(RESOLVE_IN_ROOT). The raw bytes are also written to `blob_out` when given.
    whiteouts="overlay" turns `.wh.` entries into overlayfs whiteouts (0/0 char devices,
    trusted.overlay.opaque=y); "apply" deletes the named paths instead (flattening).
    Raises LayerError on corrupt input, escapes, or when a digest differs from the expected one."""

def create_layer(
    src_dir: str,
    out: str,
    *,
    compression: Literal["gzip", "zstd", "none"] = "gzip",
    level: int | None = None,
    overlay_upper: bool = False,
    source_date_epoch: int | None = None,
) -> LayerResult:
    """Write a layer tar of `src_dir` to `out`: sorted entries, PAX headers, hardlinks kept,
    security.capability xattrs, mtimes clamped to `source_date_epoch` when given. With
    `overlay_upper`, overlayfs whiteouts and opaque dirs become OCI `.wh.` entries."""

def sha256_file(path: str, offset: int = 0, length: int | None = None) -> str:
    """ "sha256:<hex>" of a file (or a byte range of it)."""

def sha256_files(paths: list[str], threads: int = 0) -> list[str]:
    """sha256 of many files in parallel (threads=0: one per CPU). Order follows `paths`."""

# --- container runtime (rust/runtime) ---------------------------------------------------------

class StartError(Exception):
    """The container could not be started. args = (message, exit_code): 127 when the command is
    not found, 126 when it cannot be executed, 125 for any other setup failure."""

def mount_overlay(
    lowers: list[str],
    target: str,
    *,
    upper: str | None = None,
    work: str | None = None,
    method: Literal["auto", "new", "legacy"] = "auto",
    links_dir: str | None = None,
    volatile: bool = False,
) -> str:
    """Mount overlayfs at `target`. `lowers` are topmost first. `volatile` (with upper): the
    upper is never synced, so unmounting costs no syncfs; overlayfs refuses to mount that upper
    again, so only for uppers removed after use (`run --rm`); a kernel without the option
    (before 5.10) mounts without it. Without upper/work the mount is
    read-only (overlayfs then needs at least two lowers: ValueError otherwise).
    "new": fsopen("overlay") + fsconfig(FSCONFIG_SET_STRING "lowerdir+" once per layer,
    "upperdir", "workdir"; a path of 256 bytes or more goes as FSCONFIG_SET_FD, else as a
    /proc/self/fd link) + fsmount + move_mount (kernel >= 6.8 for lowerdir+).
    "legacy": mount(2) with a classic option string; to keep it under the one-page limit with
    many layers it uses short names, as Docker's overlay2 does: for each lower create (if
    missing) a symlink `links_dir/<short id>` -> lower (short id = first 10 hex chars of
    sha256(absolute lower path), stable; a stale link is replaced atomically), and mount from a
    thread that did unshare(CLONE_FS) and chdir(links_dir) with relative `lowerdir=ID1:ID2:...`
    (upperdir/workdir absolute, without ',' or ':'). links_dir is required for legacy.
    "auto": new where the kernel accepts lowerdir+, else legacy (the answer is remembered).
    Returns the method used ("new" or "legacy"). Raises ValueError for bad arguments and
    OSError(errno, message) when the mount fails; the message carries overlayfs's own reason
    when it logged one."""

def unmount(target: str, *, detach: bool = False) -> None:
    """umount2(target, MNT_DETACH if detach else 0); EINVAL/ENOENT (not mounted) is not an error."""

def ensure_tmpfs(dir: str) -> bool:
    """Make `dir` (created if missing) a tmpfs unless it is on one already; one mounter at a time
    (an flock beside it). Returns whether this call mounted. OSError when it cannot."""

def replay_run(
    root: str, template: bytes, *, stdio: tuple[int, int] | None = None
) -> tuple[str, int] | None:
    """Replay a run template (JSON; rust/fastrun.rs, python/pyrun/runtime/template.py) in the
    store at `root`, the container's stdout and stderr on `stdio` (else the caller's): None
    when something the template read changed (nothing is done then), else (container.json as
    written, exit code). A --rm container's directory, renamed into the store's tmp/, is
    deleted by a thread of its own afterwards (wait_removals). A start failure raises
    StartError(message, exit code)."""

def remove_tree(path: str) -> None:
    """Remove a file or a whole directory tree without following symlinks (by directory fds,
    GIL released); a missing path is not an error. OSError(errno, strerror, path) otherwise."""

def wait_removals() -> None:
    """Wait until the deletions replay_run left to threads have finished (GIL released)."""

@overload
def run_container(
    bundle: str,
    *,
    pid_file: str | None = None,
    stdio: tuple[int, int] | None = None,
    details: Literal[False] = False,
    interactive: bool = False,
    log: str | None = None,
) -> int: ...
@overload
def run_container(
    bundle: str,
    *,
    pid_file: str | None = None,
    stdio: tuple[int, int] | None = None,
    details: Literal[True],
    interactive: bool = False,
    log: str | None = None,
) -> RunDetails: ...
@overload
def run_container(
    bundle: str,
    *,
    pid_file: str | None = None,
    stdio: tuple[int, int] | None = None,
    details: bool,
    interactive: bool = False,
    log: str | None = None,
) -> int | RunDetails:
    """Run the container described by bundle/config.json (OCI runtime-spec 1.x; root.path
    relative to the bundle unless absolute) in the foreground with the caller's
    stdin/stdout/stderr, and return its exit status: the process's exit code, or 128+signal if
    killed by a signal. Writes the container's host pid to pid_file (temp file + rename) once it
    has been exec'd. Forwards SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 sent to the
    caller by a process to the container process while it runs (a terminal's ^C reaches the
    container directly: it shares the caller's process group); the previous handlers come back
    afterwards. A mount namespace is required. When config.json has linux.resources or
    linux.cgroupsPath (default "/pyrun/<io.pyrun.container.id annotation or bundle dir name>"),
    the parent creates that cgroup (v2 when /sys/fs/cgroup is cgroup2, else the v1 memory, cpu,
    cpuset, pids, freezer and cpuacct hierarchies, and devices when it has device rules), writes the memory/cpu/pids limits and moves the process in
    before it runs; the cgroup is removed after the exit. With details=True the result is
    {"exit_code": int, "oom_killed": bool, "cgroup": str ("" without a cgroup)}. `stdio` = (stdout fd, stderr fd) sends the container's output
    there instead of the caller's fds 1 and 2 (stdin stays the caller's). Raises StartError (one
    line) if setup or exec fails; ValueError for a malformed config.json (message names the JSON
    field) or a bad stdio fd. With process.terminal, the container's init opens a pty on its own
    /dev/ptmx as its controlling terminal and stdio and sends the master back over a socket;
    the call then copies the pty's output to stdout (or stdio[0]) and, with interactive=True,
    its stdin (in raw mode when a terminal) into the pty, passing window size changes on.
    With `log`, the output also goes to that file in Docker's json-file format (through pipes
    the call copies to stdout/stderr or stdio)."""

def exec_container(
    config: str,
    target_pid: int,
    *,
    stdio: tuple[int, int] | None = None,
    interactive: bool = False,
) -> int:
    """Run config's process (a runtime-spec config.json path whose linux.namespaces all carry a
    `path`, normally /proc/<target_pid>/ns/*) inside the running container whose init is
    target_pid, in the foreground: it joins those namespaces (the pid one for its children) and
    every cgroup target_pid is in, then applies rlimits, capabilities, no_new_privs, seccomp,
    user and cwd like run_container, and execs; root, mounts and hostname are the container's.
    Returns the exit status; raises StartError (127/126/125) or ValueError like run_container."""

# run_container and linux.seccomp: the section (defaultAction, defaultErrnoRet, architectures,
# flags TSYNC/LOG/SPEC_ALLOW, syscalls with names/action/errnoRet/args) is compiled to a BPF
# program before the container starts and installed last before exec (before the credentials
# change when noNewPrivileges is false, since seccomp(2) then needs CAP_SYS_ADMIN). Unknown
# syscall names are skipped; SCMP_ACT_NOTIFY and listenerPath raise ValueError, as does any
# malformed field (the message names it, e.g. "linux.seccomp.syscalls[3].action").

# Host networking (rust/net.rs): rtnetlink without a library. Errors are OSError(errno, msg).

def net_ensure_bridge(name: str, cidr: str, *, mtu: int | None = None) -> None:
    """Create bridge `name` with gateway address `cidr` (A.B.C.D/N), route_localnet on, up;
    whatever exists already is kept."""

def net_delete_link(name: str) -> None:
    """Delete a link (a bridge, or a veth with its peer) by name; absent is fine."""

def net_create_netns(path: str) -> None:
    """Create a network namespace (loopback up) and bind-mount it at `path`, in a directory
    made a shared mount point of its own on first use; an existing one there is kept."""

def net_delete_netns(path: str) -> None:
    """Unmount and remove a namespace file made by net_create_netns; absent is fine."""

def net_attach_veth(
    netns: str,
    inner: str,
    host: str,
    bridge: str,
    cidr: str,
    *,
    gateway: str | None = None,
    mac: bytes | None = None,
    mtu: int | None = None,
) -> None:
    """A veth pair: `inner` in the namespace at `netns` with address `cidr`, up, and a default
    route via `gateway` when given; `host` on the host, enslaved to `bridge`, up. Nothing is
    left behind when it fails."""

def freeze_cgroup(path: str, frozen: bool) -> None:
    """Freeze (`pause`) or thaw every process of the cgroup `path` ("/pyrun/<id>"): v1
    freezer.state FROZEN/THAWED, v2 cgroup.freeze, waiting (up to a second) until the kernel
    reports it done. Raises OSError with one line when the cgroup or the freezer is missing."""

def cgroup_frozen(path: str) -> bool:
    """Whether the cgroup `path` is frozen (False when it does not exist)."""

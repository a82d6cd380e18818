//! Raw system calls of the container runtime that rustix does not offer (clone3, execve,
//! mount_setattr, numeric prctl capability operations, the loopback ioctl, signal dispositions,
//! close_range). All `unsafe` of the runtime lives in this file. Every function here is safe to
//! call in the child between clone and exec: none allocates, takes a lock or formats.

use std::ffi::{c_char, CStr};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use rustix::io::Errno;

fn last_errno() -> Errno {
    // SAFETY: __errno_location returns the calling thread's errno slot, always valid.
    Errno::from_raw_os_error(unsafe { *libc::__errno_location() })
}

fn check(rc: libc::c_long) -> Result<libc::c_long, Errno> {
    if rc < 0 {
        Err(last_errno())
    } else {
        Ok(rc)
    }
}

const CLONE_NEWTIME: u64 = 0x80;

/// `struct clone_args` up to CLONE_ARGS_SIZE_VER0 (64 bytes).
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

impl CloneArgs {
    /// A child that exits by SIGCHLD, with `flags`, started in `cgroup` when given
    /// (CLONE_INTO_CGROUP), on a copy of this stack (no stack given).
    fn new(flags: u64, cgroup: Option<BorrowedFd<'_>>) -> CloneArgs {
        CloneArgs {
            flags: flags | cgroup.map_or(0, |_| CLONE_INTO_CGROUP),
            pidfd: 0,
            child_tid: 0,
            parent_tid: 0,
            exit_signal: libc::SIGCHLD as u64,
            stack: 0,
            stack_size: 0,
            tls: 0,
            set_tid: 0,
            set_tid_size: 0,
            cgroup: cgroup.map_or(0, |fd| fd.as_raw_fd() as u64),
        }
    }
}

/// Fork-like clone with namespace flags: clone3 (needed for CLONE_NEWTIME), else clone(2) with a
/// null stack. Returns 0 in the child and the child's pid in the parent. The child shares no
/// memory with the parent, and exits by `SIGCHLD` like a forked child. `cgroup`: a cgroup v2
/// directory fd the child starts in (CLONE_INTO_CGROUP, Linux 5.7); the caller falls back to
/// moving the child when that fails.
pub fn clone_fork(ns_flags: u64, cgroup: Option<BorrowedFd<'_>>) -> Result<i32, Errno> {
    let mut args = CloneArgs::new(ns_flags, cgroup);
    // SAFETY: clone3 with a null stack behaves like fork: the child continues on its own copy of
    // this stack. `args` outlives the call and its size is passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if rc >= 0 {
        return Ok(rc as i32);
    }
    let err = last_errno();
    // ENOSYS: old kernel or a seccomp filter (Docker's default profile answers ENOSYS).
    if err != Errno::NOSYS || ns_flags & CLONE_NEWTIME != 0 || cgroup.is_some() {
        return Err(err);
    }
    // SAFETY: as above; clone(2) with a null stack and no CLONE_VM is fork.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (ns_flags | libc::SIGCHLD as u64) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    check(rc).map(|pid| pid as i32)
}

/// The stack of a child that shares this process's memory ([`clone_vm`]): an anonymous
/// mapping with a guard page below it. It is unmapped on drop, which the owner must only let
/// happen once the child has exec'd or exited.
pub struct ChildStack {
    base: *mut libc::c_void,
    len: usize,
}

impl ChildStack {
    /// The setup code keeps its buffers on the stack (a failure record, paths, BPF program
    /// pointers); it uses well under this, and untouched pages cost nothing.
    const SIZE: usize = 256 * 1024;
    const GUARD: usize = 4096;

    pub fn new() -> Result<Self, Errno> {
        let len = Self::SIZE + Self::GUARD;
        // SAFETY: a fresh anonymous private mapping; no existing memory is touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(last_errno());
        }
        let stack = ChildStack { base, len };
        // SAFETY: the lowest page of the mapping made above; an overflow faults there.
        if unsafe { libc::mprotect(base, Self::GUARD, libc::PROT_NONE) } != 0 {
            return Err(last_errno());
        }
        Ok(stack)
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new(), unmapped once; its owner keeps it until the child
        // that ran on it has exec'd or exited.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// A child that shares this process's memory (CLONE_VM, as posix_spawn makes one): the clone
/// copies no page tables, the caller takes no copy-on-write faults afterwards and the exec
/// tears nothing down, which for a large caller (a Python interpreter) is most of the cost of
/// a fork. The child runs `f` on `stack` with this thread's signal mask and TLS: its errno is
/// this thread's, so while the child makes libc calls that can fail the caller should only
/// wait, with calls that do not go through errno (start_plan's child blocks on its sync pipe
/// while the parent writes id maps, and the parent reads the error pipe with rustix after).
/// Returns the child's pid; `Err` where clone3 is missing or filtered, or on an architecture
/// without the trampoline (the caller forks instead).
///
/// # Safety
/// `f` must never return, and must only make system calls that do not allocate, lock or touch
/// memory another thread may use. `f`, everything it refers to and `stack` must stay alive
/// and unchanged until the child has exec'd or exited (EOF on a close-on-exec pipe, or reaped).
pub unsafe fn clone_vm<F: Fn() -> std::convert::Infallible>(
    ns_flags: u64,
    cgroup: Option<BorrowedFd<'_>>,
    stack: &ChildStack,
    f: &F,
) -> Result<i32, Errno> {
    extern "C" fn trampoline<F: Fn() -> std::convert::Infallible>(arg: *mut libc::c_void) -> ! {
        // SAFETY: `arg` is the `&F` clone_vm was given, alive until this child exec'd or
        // exited (the caller's contract).
        let f = unsafe { &*(arg as *const F) };
        match f() {}
    }
    let mut args = CloneArgs::new(ns_flags | libc::CLONE_VM as u64, cgroup);
    args.stack = stack.base as u64 + ChildStack::GUARD as u64;
    args.stack_size = ChildStack::SIZE as u64;
    let entry: extern "C" fn(*mut libc::c_void) -> ! = trampoline::<F>;
    let arg = f as *const F as *mut libc::c_void;
    let rc = clone3_on_stack(&mut args, entry, arg);
    if rc < 0 {
        Err(Errno::from_raw_os_error(-rc as i32))
    } else {
        Ok(rc as i32)
    }
}

/// clone3 whose child calls `entry(arg)` on the stack in `args` (the kernel points the stack
/// pointer at its top; every other register is the caller's). Returns the pid or -errno.
#[cfg(target_arch = "x86_64")]
fn clone3_on_stack(
    args: &mut CloneArgs,
    entry: extern "C" fn(*mut libc::c_void) -> !,
    arg: *mut libc::c_void,
) -> libc::c_long {
    let ret: libc::c_long;
    // SAFETY: clone3 with `args` (alive for the call, its size passed). The parent only gets
    // rax back. The child starts on its own 16-byte-aligned stack, so `call` gives `entry`
    // the ABI's alignment, and never comes back here (`entry` diverges; ud2 otherwise).
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, r13",
            "call r12",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args as *mut CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") entry,
            in("r13") arg,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

#[cfg(not(target_arch = "x86_64"))]
fn clone3_on_stack(
    _args: &mut CloneArgs,
    _entry: extern "C" fn(*mut libc::c_void) -> !,
    _arg: *mut libc::c_void,
) -> libc::c_long {
    -(libc::ENOSYS as libc::c_long)
}

/// This process's dumpable flag (PR_GET_DUMPABLE), which belongs to its memory.
pub fn dumpable() -> Result<bool, Errno> {
    // SAFETY: PR_GET_DUMPABLE takes no arguments.
    let rc = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
    check(rc as libc::c_long).map(|v| v == 1)
}

/// `unshare(flags)`: in the child after clone (single-threaded there), or CLONE_FS in a thread
/// of its own that then changes directory without affecting the rest of the process.
pub fn unshare(flags: u64) -> Result<(), Errno> {
    // SAFETY: plain syscall with an integer argument.
    check(unsafe { libc::syscall(libc::SYS_unshare, flags as libc::c_ulong) }).map(drop)
}

/// `execve(path, argv, envp)`; returns only on failure. `argv` and `envp` must end with a null
/// pointer (checked) and point at NUL-terminated strings that outlive the call.
pub fn execve(path: &CStr, argv: &[*const c_char], envp: &[*const c_char]) -> Errno {
    if !matches!(argv.last(), Some(p) if p.is_null())
        || !matches!(envp.last(), Some(p) if p.is_null())
    {
        return Errno::INVAL;
    }
    // SAFETY: both arrays are null-terminated arrays of pointers to C strings owned by the
    // caller's pre-built plan, and `path` is a valid C string.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    last_errno()
}

/// `_exit(code)`: no atexit handlers, no stdio flush.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no user-space state.
    unsafe { libc::_exit(code) }
}

fn prctl(option: libc::c_int, arg2: libc::c_ulong, arg3: libc::c_ulong) -> Result<(), Errno> {
    // SAFETY: the options used here take integer arguments only.
    let rc = unsafe { libc::prctl(option, arg2, arg3, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    check(rc as libc::c_long).map(drop)
}

pub fn set_pdeathsig(sig: i32) -> Result<(), Errno> {
    prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0)
}

pub fn set_dumpable(on: bool) -> Result<(), Errno> {
    prctl(libc::PR_SET_DUMPABLE, on as libc::c_ulong, 0)
}

pub fn set_keepcaps(on: bool) -> Result<(), Errno> {
    prctl(libc::PR_SET_KEEPCAPS, on as libc::c_ulong, 0)
}

pub fn set_no_new_privs() -> Result<(), Errno> {
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0)
}

pub fn capbset_drop(cap: u32) -> Result<(), Errno> {
    prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0)
}

pub fn ambient_raise(cap: u32) -> Result<(), Errno> {
    prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
        cap as libc::c_ulong,
    )
}

/// `capset` for the calling thread (version 3: 64-bit sets).
pub fn capset(effective: u64, permitted: u64, inheritable: u64) -> Result<(), Errno> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let data = [
        Data {
            effective: effective as u32,
            permitted: permitted as u32,
            inheritable: inheritable as u32,
        },
        Data {
            effective: (effective >> 32) as u32,
            permitted: (permitted >> 32) as u32,
            inheritable: (inheritable >> 32) as u32,
        },
    ];
    // SAFETY: header and the two-element data array are valid for the duration of the call.
    check(unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) })
        .map(drop)
}

pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub const MOUNT_ATTR_ATIME_MASK: u64 = 0x70;
pub const MOUNT_ATTR_NOATIME: u64 = 0x10;
pub const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
pub const MOUNT_ATTR_NODIRATIME: u64 = 0x80;
pub const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x0020_0000;

/// `mount_setattr(fd, "", AT_EMPTY_PATH [| AT_RECURSIVE], {set, clr, propagation})` on the mount
/// an fd refers to (a detached tree from open_tree or fsmount, or an attached one).
pub fn mount_setattr(
    fd: BorrowedFd<'_>,
    recursive: bool,
    set: u64,
    clr: u64,
    propagation: u64,
) -> Result<(), Errno> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clr,
        propagation,
        userns_fd: 0,
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: a valid fd, an empty NUL-terminated path and a struct whose size is passed.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

/// Set IFF_UP on the loopback interface of the current network namespace.
pub fn loopback_up() -> Result<(), Errno> {
    // SAFETY: socket(2) with integer arguments; the returned fd is owned at once.
    let fd = check(unsafe {
        libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) as libc::c_long
    })?;
    // SAFETY: fd was just returned by socket and is owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
    unsafe {
        check(libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) as libc::c_long)?;
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        check(libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) as libc::c_long)?;
    }
    Ok(())
}

/// `close_range(first, ~0, CLOSE_RANGE_CLOEXEC)`: every fd from `first` on closes at exec, so
/// the error pipe still works until then. Falls back to fcntl on each fd up to 65536.
pub fn cloexec_from(first: u32) -> Result<(), Errno> {
    // SAFETY: integer arguments only.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = last_errno();
    if err != Errno::NOSYS && err != Errno::INVAL {
        return Err(err);
    }
    for fd in first..65536 {
        // SAFETY: fcntl on a possibly closed fd only fails with EBADF.
        unsafe { libc::fcntl(fd as i32, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// Whether the current working directory is reachable from the current root: the getcwd
/// system call prefixes an unreachable one with "(unreachable)" (CVE-2024-21626 check).
pub fn cwd_is_reachable() -> Result<bool, Errno> {
    let mut buf = [0u8; 4096];
    // SAFETY: the kernel writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
    match check(rc) {
        Ok(_) => Ok(buf[0] == b'/'),
        Err(Errno::NOENT) => Ok(false),
        Err(Errno::RANGE) => Ok(true),
        Err(e) => Err(e),
    }
}

/// Reset every signal disposition to the default and unblock all signals (the child must not
/// keep the caller's handlers, ignored SIGPIPE or mask).
pub fn reset_signals() {
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL; failures (glibc-reserved signals) are ignored.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    // SAFETY: an empty set, written by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// A signal mask saved by [`block_all_signals`].
pub struct SavedMask(libc::sigset_t);

/// Block every signal in the calling thread; returns the previous mask.
pub fn block_all_signals() -> SavedMask {
    // SAFETY: sets are initialised by sigfillset / written by pthread_sigmask.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        SavedMask(old)
    }
}

pub fn restore_signal_mask(saved: &SavedMask) {
    // SAFETY: restoring a mask obtained from pthread_sigmask.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &saved.0, std::ptr::null_mut());
    }
}

/// A signal disposition saved by [`set_handler`].
pub struct SavedAction(libc::sigaction);

/// Install the forwarding handler (below) for `sig` (SA_SIGINFO | SA_RESTART | SA_ONSTACK) and
/// return the previous disposition.
pub fn set_forwarding_handler(sig: i32) -> Result<SavedAction, Errno> {
    let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
        forward_handler;
    // SAFETY: the sigaction structs are initialised before use; the handler is an extern "C"
    // function that only performs async-signal-safe operations.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
        libc::sigemptyset(&mut sa.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(sig, &sa, &mut old) != 0 {
            return Err(last_errno());
        }
        Ok(SavedAction(old))
    }
}

/// The forwarding handler: signals the kernel generated itself (a terminal's ^C or ^\\ to the
/// whole foreground process group, which the container is part of) are not passed on, those a
/// process sent with kill are.
extern "C" fn forward_handler(
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    _ctx: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler; null is checked.
    let from_kernel = !info.is_null() && unsafe { (*info).si_code } == libc::SI_KERNEL;
    if !from_kernel {
        super::signals::forward(sig);
    }
}

pub fn restore_handler(sig: i32, saved: &SavedAction) {
    // SAFETY: reinstalling a disposition that sigaction returned.
    unsafe {
        libc::sigaction(sig, &saved.0, std::ptr::null_mut());
    }
}

/// `kill(pid, sig)` that leaves errno as it was: usable from a signal handler.
pub fn kill_in_handler(pid: i32, sig: i32) {
    // SAFETY: errno is the calling thread's slot; kill takes integer arguments only.
    unsafe {
        let saved = *libc::__errno_location();
        libc::kill(pid, sig);
        *libc::__errno_location() = saved;
    }
}

/// `kill(pid, sig)`, ignoring errors (the process may already be gone).
pub fn kill(pid: i32, sig: i32) {
    // SAFETY: integer arguments only.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// `dup2(old, new)`: `new` (0, 1 or 2 here) becomes `old`, without close-on-exec.
pub fn dup2(old: BorrowedFd<'_>, new: i32) -> Result<(), Errno> {
    loop {
        // SAFETY: dup2 on a valid fd and a small fd number.
        let rc = unsafe { libc::dup2(old.as_raw_fd(), new) };
        if rc >= 0 {
            return Ok(());
        }
        let e = last_errno();
        if e != Errno::INTR && e != Errno::BUSY {
            return Err(e);
        }
    }
}

/// Close a raw fd inherited through clone without touching the Rust object that owns it in the
/// parent's copy of memory (the child never drops it: it execs or exits).
pub fn close_raw(fd: i32) {
    // SAFETY: closing an fd number; at worst EBADF.
    unsafe {
        libc::close(fd);
    }
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, flags, &prog)`: install a classic BPF filter on the
/// calling thread. Needs no_new_privs or CAP_SYS_ADMIN.
pub fn seccomp_set_filter(program: &[super::seccomp::SockFilter], flags: u32) -> Result<(), Errno> {
    #[repr(C)]
    struct SockFprog {
        len: u16,
        filter: *const super::seccomp::SockFilter,
    }
    let len = u16::try_from(program.len()).map_err(|_| Errno::INVAL)?;
    let prog = SockFprog {
        len,
        filter: program.as_ptr(),
    };
    const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
    // SAFETY: `prog` points at `len` instructions of #[repr(C)] sock_filter layout, both alive
    // for the duration of the call; the kernel copies the program.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            flags as libc::c_ulong,
            &prog as *const SockFprog,
        )
    };
    check(rc).map(drop)
}

/// Wait for any signal (all blocked by the caller); returns its number, or -1 on an error.
pub fn wait_signal() -> i32 {
    // SAFETY: a filled set and a null siginfo pointer, as sigwaitinfo allows.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigwaitinfo(&all, std::ptr::null_mut())
    }
}

/// Reap one exited child without blocking: (pid, exit code or 128 + signal).
pub fn reap_any() -> Option<(i32, i32)> {
    let mut status = 0;
    // SAFETY: waitpid with a valid status pointer.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    if pid <= 0 {
        return None;
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        return Some((0, 0)); // stopped or continued: not an exit
    };
    Some((pid, code))
}

/// Close every fd from `first` up (close_range, else one by one): the `--init` reaper keeps
/// nothing of the runtime's, since it never execs to drop its close-on-exec fds.
pub fn close_from(first: u32) {
    // SAFETY: integer arguments only.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) };
    if rc == 0 {
        return;
    }
    for fd in first..65536 {
        close_raw(fd as i32);
    }
}

// --- pseudo-terminals ---------------------------------------------------------------------------

/// An AF_UNIX stream socket pair, close-on-exec: how the child hands the pty master back.
pub fn socketpair() -> Result<(OwnedFd, OwnedFd), Errno> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds has room for the two descriptors socketpair writes.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    check(rc as libc::c_long)?;
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Send `fd` over the unix socket `sock` (SCM_RIGHTS, one byte of payload). Stack only.
pub fn send_fd(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: the msghdr points at stack buffers that outlive the call; the control buffer is
    // sized and aligned for one int with CMSG_SPACE.
    unsafe {
        let mut byte = [0u8; 1];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let mut control = [0u64; 4]; // 32 bytes >= CMSG_SPACE(sizeof(int)), 8-aligned
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), fd.as_raw_fd());
        loop {
            let rc = libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL);
            if rc >= 0 {
                return Ok(());
            }
            let e = last_errno();
            if e != Errno::INTR {
                return Err(e);
            }
        }
    }
}

/// Receive one fd sent with [`send_fd`] (without blocking when `nonblocking`).
pub fn recv_fd(sock: BorrowedFd<'_>, nonblocking: bool) -> Result<OwnedFd, Errno> {
    // SAFETY: as in send_fd; the received descriptor is taken over as an OwnedFd.
    unsafe {
        let mut byte = [0u8; 1];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let mut control = [0u64; 4];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let flags = libc::MSG_CMSG_CLOEXEC | if nonblocking { libc::MSG_DONTWAIT } else { 0 };
        let rc = loop {
            let rc = libc::recvmsg(sock.as_raw_fd(), &mut msg, flags);
            if rc >= 0 || last_errno() != Errno::INTR {
                break rc;
            }
        };
        check(rc as libc::c_long)?;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
        {
            return Err(Errno::PROTO);
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// In the container: a new session whose controlling terminal is a fresh pty of the
/// container's devpts (/dev/ptmx); returns (master, slave).
pub fn open_console() -> Result<(OwnedFd, OwnedFd), Errno> {
    // SAFETY: setsid, open, and ioctls with integer or pointer-to-int arguments on fds we own.
    unsafe {
        if libc::setsid() < 0 {
            return Err(last_errno());
        }
        let m = libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if m < 0 {
            return Err(last_errno());
        }
        let master = OwnedFd::from_raw_fd(m);
        let unlock: libc::c_int = 0;
        if libc::ioctl(m, libc::TIOCSPTLCK, &unlock) < 0 {
            return Err(last_errno());
        }
        let s = libc::ioctl(
            m,
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if s < 0 {
            return Err(last_errno());
        }
        let slave = OwnedFd::from_raw_fd(s);
        if libc::ioctl(s, libc::TIOCSCTTY, 0) < 0 {
            return Err(last_errno());
        }
        Ok((master, slave))
    }
}

/// The window size of a terminal fd, if it is one.
pub fn window_size(fd: i32) -> Option<libc::winsize> {
    // SAFETY: TIOCGWINSZ writes a winsize into the struct we pass.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        (libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) == 0).then_some(ws)
    }
}

pub fn set_window_size(fd: i32, ws: &libc::winsize) {
    // SAFETY: TIOCSWINSZ reads the struct we pass.
    unsafe {
        libc::ioctl(fd, libc::TIOCSWINSZ, ws as *const libc::winsize);
    }
}

/// Put terminal `fd` in raw mode; returns the settings to restore.
pub fn make_raw(fd: i32) -> Option<libc::termios> {
    // SAFETY: termios structs written by tcgetattr before use.
    unsafe {
        let mut saved: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut saved) != 0 {
            return None;
        }
        let mut raw = saved;
        libc::cfmakeraw(&mut raw);
        (libc::tcsetattr(fd, libc::TCSANOW, &raw) == 0).then_some(saved)
    }
}

pub fn restore_termios(fd: i32, saved: &libc::termios) {
    // SAFETY: restoring settings obtained from tcgetattr.
    unsafe {
        libc::tcsetattr(fd, libc::TCSANOW, saved);
    }
}

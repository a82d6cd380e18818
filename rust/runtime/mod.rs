//! The container runtime: run an OCI bundle in the foreground (`run_container`), and the
//! overlay mounts that image stores need (`mount_overlay`, `unmount`).
//!
//! Process model: the parent (the caller's thread, GIL released) parses and validates
//! config.json and pre-builds everything in a [`plan::Plan`]; then it clones a child with the
//! new namespaces. The child ([`child`]) only makes system calls on the plan, and reports a
//! failure as a binary record on a close-on-exec pipe. The parent writes the user namespace
//! maps, releases the child through a sync pipe, reads the error pipe until EOF (exec done),
//! writes the pid file, then waits while forwarding signals ([`signals`]).

pub mod caps;
pub mod child;
pub mod console;
pub mod overlay;
pub mod plan;
pub mod seccomp;
mod seccomp_tables;
pub mod signals;
pub mod spec;
pub mod sys;

use std::fmt;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::process::{Pid, WaitIdOptions, WaitOptions};

use child::{ChildPipes, Failure, Step};
use plan::Plan;

/// Errors of the runtime. `Start` becomes `pyrun._core.StartError(message, exit_code)`,
/// `Value` a `ValueError`, `Os` an `OSError(errno, message)`.
#[derive(Debug)]
pub enum Error {
    Start { msg: String, code: i32 },
    Value(String),
    Os { errno: i32, msg: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Start { msg, code } => write!(f, "{msg} (exit code {code})"),
            Error::Value(m) => f.write_str(m),
            Error::Os { msg, .. } => f.write_str(msg),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// "Operation not permitted", without Rust's " (os error 1)" suffix.
pub fn strerror(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => errno_text(n),
        None => e.to_string(),
    }
}

pub fn errno_text(n: i32) -> String {
    let s = std::io::Error::from_raw_os_error(n).to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn start(msg: impl Into<String>) -> Error {
    Error::Start {
        msg: msg.into(),
        code: 125,
    }
}

fn start_io(what: impl fmt::Display, e: impl Into<std::io::Error>) -> Error {
    start(format!("{what}: {}", strerror(&e.into())))
}

/// How a container run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The exit code, or 128 + the signal that killed the process.
    pub exit_code: i32,
    /// Whether the OOM killer killed a process of the container's cgroup.
    pub oom_killed: bool,
    /// The cgroup path ("" when config.json asked for no cgroup).
    pub cgroup: String,
}

/// Run the container of `bundle` in the foreground and return how it ended. `stdio` =
/// (stdout fd, stderr fd) for the container instead of the caller's 1 and 2.
pub fn run_container(
    bundle: &Path,
    pid_file: Option<&Path>,
    stdio: Option<(i32, i32)>,
    interactive: bool,
    log: Option<&Path>,
) -> Result<Outcome> {
    run_foreground(plan::build(bundle)?, pid_file, stdio, interactive, log)
}

/// Run a built plan in the foreground with the caller's stdio, or `stdio` = (stdout, stderr)
/// fds; `interactive` copies the caller's stdin into a terminal container's pty.
pub fn run_foreground(
    mut plan: Plan,
    pid_file: Option<&Path>,
    stdio: Option<(i32, i32)>,
    interactive: bool,
    log: Option<&Path>,
) -> Result<Outcome> {
    if let Some((out, err)) = stdio {
        plan.stdio = Some(dup_stdio(out, err)?);
    }
    let tio = TerminalIo {
        stdin: interactive.then_some(0),
        out: stdio.map(|(out, _)| out),
    };
    tio.fill_size(&mut plan);
    run_plan(&mut plan, pid_file, tio, log)
}

/// Enter a pid namespace for this thread's future children, and leave it again on drop.
struct PidNsGuard {
    saved: OwnedFd,
}

impl PidNsGuard {
    fn enter(target: &plan::JoinNs) -> Result<PidNsGuard> {
        let saved = rustix::fs::open(
            "/proc/thread-self/ns/pid_for_children",
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| start_io("open /proc/thread-self/ns/pid_for_children", e))?;
        rustix::thread::move_into_link_name_space(
            target.fd.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::ProcessID),
        )
        .map_err(|e| start_io(format!("join pid namespace {}", target.path), e))?;
        Ok(PidNsGuard { saved })
    }
}

impl Drop for PidNsGuard {
    fn drop(&mut self) {
        let _ = rustix::thread::move_into_link_name_space(
            self.saved.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::ProcessID),
        );
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| start_io("pipe", e))
}

/// Reap `pid`, retrying on EINTR; returns its wait status.
pub fn reap(pid: Pid) -> Option<rustix::process::WaitStatus> {
    loop {
        match rustix::process::waitpid(Some(pid), WaitOptions::empty()) {
            Ok(Some((_, status))) => return Some(status),
            Ok(None) => return None,
            Err(Errno::INTR) => continue,
            Err(_) => return None,
        }
    }
}

fn kill_and_reap(pid: Pid) {
    sys::kill(pid.as_raw_nonzero().get(), libc::SIGKILL);
    reap(pid);
}

fn status_code(status: rustix::process::WaitStatus) -> i32 {
    if let Some(code) = status.exit_status() {
        code
    } else if let Some(sig) = status.terminating_signal() {
        128 + sig
    } else {
        125
    }
}

/// The container's cgroup, removed on drop.
struct CgroupGuard(Box<dyn crate::cgroups::Manager>);

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        let _ = self.0.destroy();
    }
}

/// A container process that has exec'd: its pid and its cgroup (removed by [`Started::finish`]
/// or on drop).
pub struct Started {
    pub pid: Pid,
    cgroup: Option<CgroupGuard>,
    /// The pty master when process.terminal is set.
    pub console: Option<OwnedFd>,
    /// Whether the child was cloned straight into its cgroup (v2's CLONE_INTO_CGROUP) rather
    /// than moved in.
    pub cloned_into_cgroup: bool,
}

impl Started {
    pub fn pid_raw(&self) -> i32 {
        self.pid.as_raw_nonzero().get()
    }

    /// Leave the container running past this call (`pyrun-runtime create`, `exec --detach`):
    /// its cgroup stays; returns the pty master when there is one.
    pub fn detach(mut self) -> Option<OwnedFd> {
        if let Some(g) = self.cgroup.take() {
            std::mem::forget(g);
        }
        self.console.take()
    }

    /// The outcome once the process has exited and `status` was reaped; removes the cgroup.
    pub fn finish(mut self, status: rustix::process::WaitStatus) -> Outcome {
        let (oom_killed, cgroup_path) = match self.cgroup.as_mut() {
            Some(g) => {
                let oom = g.0.oom_killed();
                let path = g.0.path().to_string();
                let _ = g.0.destroy();
                (oom, path)
            }
            None => (false, String::new()),
        };
        Outcome {
            exit_code: status_code(status),
            oom_killed,
            cgroup: cgroup_path,
        }
    }
}

/// Wait for `pid` to exit without reaping it (so a signal sent meanwhile cannot reach a
/// process that reused the pid).
pub fn wait_exited(pid: Pid) {
    while let Err(Errno::INTR) = rustix::process::waitid(
        rustix::process::WaitId::Pid(pid),
        WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
    ) {}
}

/// Whether `pid` (a child) has exited, without reaping it or waiting.
pub fn has_exited(pid: Pid) -> bool {
    matches!(
        rustix::process::waitid(
            rustix::process::WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT | WaitIdOptions::NOHANG,
        ),
        Ok(Some(_))
    )
}

/// Where a terminal container's pty is copied to and from in the foreground.
#[derive(Debug, Clone, Copy, Default)]
pub struct TerminalIo {
    /// Copy this fd (the caller's stdin) into the pty (`-i`).
    pub stdin: Option<i32>,
    /// Where the pty's output goes (default the caller's stdout).
    pub out: Option<i32>,
}

impl TerminalIo {
    /// The pty's first size: config.json's consoleSize, else the caller's terminal's.
    pub fn fill_size(&self, plan: &mut Plan) {
        if !plan.terminal || plan.console_size.is_some() {
            return;
        }
        let fds = [self.stdin.unwrap_or(-1), self.out.unwrap_or(1)];
        plan.console_size = fds
            .into_iter()
            .filter(|fd| *fd >= 0)
            .find_map(sys::window_size)
            .map(|ws| (ws.ws_row, ws.ws_col));
    }
}

fn run_plan(
    plan: &mut Plan,
    pid_file: Option<&Path>,
    tio: TerminalIo,
    log: Option<&Path>,
) -> Result<Outcome> {
    // With a log, the output goes through pipes (or the pty) to both the caller's fds and the
    // json-file log, as `docker logs` shows an attached container's output too.
    let mut writer = match log {
        Some(path) => Some(
            crate::logfile::LogWriter::new(Some(path))
                .map_err(|e| start_io(format!("open log {}", path.display()), e))?,
        ),
        None => None,
    };
    let mut readers = [None, None];
    if writer.is_some() && !plan.terminal {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (out, err) = match &plan.stdio {
            Some((o, e)) => (o.as_raw_fd(), e.as_raw_fd()),
            None => (1, 2),
        };
        writer = writer.map(|w| w.with_tee(out, err));
        readers = [Some(out_r), Some(err_r)];
        plan.stdio_override = Some((out_w, err_w));
    }
    let mut forwarder =
        signals::Forwarder::install().map_err(|e| start_io("install signal handlers", e))?;
    let started = start_plan(plan, pid_file, Some(&mut forwarder));
    plan.stdio_override = None; // our copies of the pipes' write ends: EOF once the child exits
    let started = started?;
    if let Some(master) = &started.console {
        console::proxy(
            master,
            started.pid,
            tio.stdin,
            tio.out.unwrap_or(1),
            writer.as_mut(),
        );
        if let Some(w) = writer.as_mut() {
            w.flush(0);
        }
    } else if let Some(w) = writer.as_mut() {
        crate::logfile::copy_output(readers, w, started.pid, None);
    }
    wait_exited(started.pid);
    forwarder.unwatch();
    let status = reap(started.pid).ok_or_else(|| start("wait for the container process failed"))?;
    Ok(started.finish(status))
}

/// What the child gets of [`start_plan`]'s pipes, as plain numbers and a pointer: usable by a
/// child with its own copy of the fd table, whether or not it shares the caller's memory.
#[derive(Clone, Copy)]
struct RawPipes {
    sync_r: i32,
    sync_w: i32,
    err_r: i32,
    err_w: i32,
    console: Option<i32>,
    cgroup_tasks: (*const OwnedFd, usize),
}

impl RawPipes {
    /// In the child: run its setup on `plan` (never returns).
    fn enter(self, plan: &Plan) -> ! {
        // SAFETY: the fds are open in the child's copy of the fd table (the parent closes its
        // own copies only after the clone), and `cgroup_tasks` points into a Vec the parent
        // keeps unchanged until the child exec'd or exited.
        let pipes = unsafe {
            ChildPipes {
                sync_r: BorrowedFd::borrow_raw(self.sync_r),
                sync_w: BorrowedFd::borrow_raw(self.sync_w),
                err_r: BorrowedFd::borrow_raw(self.err_r),
                err_w: BorrowedFd::borrow_raw(self.err_w),
                console: self.console.map(|c| BorrowedFd::borrow_raw(c)),
                cgroup_tasks: std::slice::from_raw_parts(self.cgroup_tasks.0, self.cgroup_tasks.1),
            }
        };
        child::main(plan, &pipes)
    }
}

/// How many children of this process share its memory while they are set up, and whether the
/// memory was dumpable before the first: the child makes itself non-dumpable (so nothing can
/// ptrace it or open its /proc files while it holds the host's view), and a change of
/// credentials does the same; with shared memory that flag is the caller's too, so the last
/// one to finish puts it back.
static SHARED_SETUPS: std::sync::Mutex<(usize, bool)> = std::sync::Mutex::new((0, false));

/// A child set up in this process's memory (CLONE_VM): its stack, and its part in restoring
/// the dumpable flag. Dropped only once the child has exec'd or exited.
struct SharedSetup {
    stack: sys::ChildStack,
}

impl SharedSetup {
    /// `Some` where sharing the memory is safe: a new container in a new pid namespace (no
    /// other process can see the child but the host's root), whose child execs the command
    /// itself (not `--init`, whose reaper lives on), does not wait for `start` past the
    /// caller (`create`'s gate), does not set oom_score_adj (which the kernel applies to
    /// every process that shares the memory) and makes no time namespace (which the kernel
    /// refuses with CLONE_VM). Everything else forks.
    fn for_plan(plan: &Plan) -> Option<Self> {
        const CLONE_NEWTIME: u64 = 0x80;
        let fits = plan.exec_into.is_none()
            && plan.join_pid.is_none()
            && plan.clone_flags & libc::CLONE_NEWPID as u64 != 0
            && plan.clone_flags & CLONE_NEWTIME == 0
            && !plan.init
            && plan.gate.is_none()
            && plan.oom_score_adj.is_none();
        if !fits {
            return None;
        }
        let stack = sys::ChildStack::new().ok()?;
        let mut setups = SHARED_SETUPS.lock().unwrap_or_else(|e| e.into_inner());
        if setups.0 == 0 {
            setups.1 = sys::dumpable().unwrap_or(false);
        }
        setups.0 += 1;
        Some(SharedSetup { stack })
    }
}

impl Drop for SharedSetup {
    fn drop(&mut self) {
        let mut setups = SHARED_SETUPS.lock().unwrap_or_else(|e| e.into_inner());
        setups.0 -= 1;
        if setups.0 == 0 && setups.1 {
            let _ = sys::set_dumpable(true);
        }
    }
}

/// Clone the container process, set up its id maps and cgroup, release it and wait until it
/// exec'd (or report why it could not). `forwarder`, when given, forwards signals to it from
/// the moment it exists.
pub fn start_plan(
    plan: &Plan,
    pid_file: Option<&Path>,
    mut forwarder: Option<&mut signals::Forwarder>,
) -> Result<Started> {
    let (sync_r, sync_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let console = if plan.terminal {
        Some(sys::socketpair().map_err(|e| start_io("socketpair", e))?)
    } else {
        None
    };

    // The cgroup is made and its limits written before the clone, and the child starts in it
    // without a process move: a move (a pid written to `cgroup.procs`) takes the threadgroup
    // lock for writing, which costs an RCU grace period (5-20 ms measured here). On v2 the
    // child is cloned straight into the cgroup (CLONE_INTO_CGROUP); on v1 it writes "0" into
    // each hierarchy's `tasks`, opened here, before anything else (a single thread's move
    // skips that lock). Either way the container never runs outside its limits.
    let mut cgroup = None;
    let mut cgroup_fd = None;
    let mut join_tasks: Vec<OwnedFd> = Vec::new();
    let mut self_joins = false;
    // `exec`: the unified cgroup to move the child into if clone3 cannot start it there.
    let mut exec_unified = None;
    if let Some(cg) = &plan.cgroup {
        let mut guard = crate::cgroups::manager(Path::new(crate::cgroups::ROOT), &cg.path)
            .map(CgroupGuard)
            .map_err(start)?;
        // On an error the guard's drop removes what was created.
        cgroup_fd = guard.0.prepare(&cg.resources).map_err(start)?;
        if cgroup_fd.is_none() {
            join_tasks = guard.0.join_files().map_err(start)?;
            self_joins = true;
        }
        cgroup = Some(guard);
    }
    if let Some(target) = plan.exec_into {
        let files = crate::cgroups::join_files_of(Path::new(crate::cgroups::ROOT), target)
            .map_err(start)?;
        join_tasks.extend(files.tasks);
        if let (Some((dir, fd)), None) = (files.unified, &cgroup_fd) {
            cgroup_fd = Some(fd);
            exec_unified = Some(dir);
        }
    }

    let pidns = match &plan.join_pid {
        Some(j) => Some(PidNsGuard::enter(j)?),
        None => None,
    };
    // The child's view of the pipes: fd numbers, valid in the fd table it gets a copy of at
    // the clone, and the `tasks` files in `join_tasks`, which lives until the child exec'd.
    let raw = RawPipes {
        sync_r: sync_r.as_raw_fd(),
        sync_w: sync_w.as_raw_fd(),
        err_r: err_r.as_raw_fd(),
        err_w: err_w.as_raw_fd(),
        console: console.as_ref().map(|(_, c)| c.as_raw_fd()),
        cgroup_tasks: (join_tasks.as_ptr(), join_tasks.len()),
    };
    let enter_child = move || -> std::convert::Infallible { raw.enter(plan) };
    // Where it is safe, the child shares this process's memory instead of copying it (see
    // SharedSetup); the stack it runs on and `enter_child` live until this function returns,
    // which is after the child exec'd or exited on every path.
    let shared = SharedSetup::for_plan(plan);
    // All signals stay blocked across clone: the child resets every handler before it
    // unblocks them, so the forwarding handler never runs in the child.
    let mask = sys::block_all_signals();
    let clone = |cgroup: Option<BorrowedFd<'_>>| {
        if let Some(s) = &shared {
            // SAFETY: `enter_child` runs child::main, which makes system calls on the plan
            // only (no allocation, lock or formatting) and execs or exits; the plan, the
            // `tasks` files, `enter_child` and the stack outlive the child's setup (above).
            if let Ok(pid) =
                unsafe { sys::clone_vm(plan.clone_flags, cgroup, &s.stack, &enter_child) }
            {
                return Ok(pid);
            }
        }
        sys::clone_fork(plan.clone_flags, cgroup)
    };
    let mut into_cgroup = cgroup_fd.is_some();
    let mut cloned = clone(cgroup_fd.as_ref().map(|f| f.as_fd()));
    if cloned.is_err() && into_cgroup {
        // Before 5.7, or a cgroup clone3 cannot start a process in: move the child instead.
        into_cgroup = false;
        cloned = clone(None);
    }
    drop(cgroup_fd);
    if let Ok(0) = cloned {
        raw.enter(plan); // a forked child, on its own copy of the memory
    }
    if let (Ok(pid), Some(f)) = (cloned, forwarder.as_deref_mut()) {
        f.watch(pid);
    }
    sys::restore_signal_mask(&mask);
    drop(pidns);
    let pid = cloned.map_err(|e| start_io("clone", e))?;
    let pid = Pid::from_raw(pid).ok_or_else(|| start("clone returned no pid"))?;
    drop(sync_r);
    drop(err_w);
    let console_parent = console.map(|(parent, _child)| parent);
    let fail = |forwarder: Option<&mut signals::Forwarder>, e: Error| {
        if let Some(f) = forwarder {
            f.unwatch();
        }
        kill_and_reap(pid);
        Err(e)
    };

    if plan.new_userns {
        if let Err(e) = write_id_maps(plan, pid) {
            return fail(forwarder, e);
        }
    }
    if let (Some(guard), false, false) = (cgroup.as_mut(), into_cgroup, self_joins) {
        // A v2 cgroup that clone3 could not start the child in.
        if let Err(msg) = guard.0.add(pid.as_raw_nonzero().get()) {
            let r = fail(forwarder, start(msg));
            drop(cgroup); // removes the cgroup, now that the child is gone
            return r;
        }
    }
    if let (Some(dir), false) = (&exec_unified, into_cgroup) {
        if let Err(msg) = crate::cgroups::move_into(dir, pid.as_raw_nonzero().get()) {
            return fail(forwarder, start(msg));
        }
    }
    if let Some(hook) = &plan.on_created {
        if let Err(msg) = hook(pid.as_raw_nonzero().get()) {
            let r = fail(forwarder, start(msg));
            drop(cgroup);
            return r;
        }
    }
    // Release the child. If it already died, the error pipe says why (or is empty).
    let _ = rustix::io::write(&sync_w, &[1u8]);
    drop(sync_w);

    let record = read_record(&err_r);
    drop(err_r);
    drop(join_tasks); // the child has written "0" into them, or is gone
    if let Some(rec) = record {
        if let Some(f) = forwarder {
            f.unwatch();
        }
        reap(pid);
        return Err(match Failure::decode(&rec) {
            Some(f) => Error::Start {
                msg: describe(plan, &f),
                code: f.exit_code(),
            },
            None => start("container setup failed: malformed error record"),
        });
    }

    // The child sent the pty master before it exec'd: it is waiting in the socket.
    let master = match &console_parent {
        Some(sock) => match sys::recv_fd(sock.as_fd(), true) {
            Ok(m) => Some(m),
            Err(e) => return fail(forwarder, start_io("receive the container's pty", e)),
        },
        None => None,
    };
    if let Some(pf) = pid_file {
        if let Err(e) = write_pid_file(pf, pid.as_raw_nonzero().get()) {
            return fail(
                forwarder,
                start_io(format!("write pid file {}", pf.display()), e),
            );
        }
    }
    Ok(Started {
        pid,
        cgroup,
        console: master,
        cloned_into_cgroup: into_cgroup,
    })
}

/// Run a process in the running container whose init is `target_pid` (`exec`), in the
/// foreground: `config` is a runtime-spec config whose namespaces are joined by path.
pub fn exec_container(
    config: &Path,
    target_pid: i32,
    stdio: Option<(i32, i32)>,
    interactive: bool,
) -> Result<Outcome> {
    run_foreground(
        plan::build_exec(config, target_pid)?,
        None,
        stdio,
        interactive,
        None,
    )
}

fn dup_stdio(out: i32, err: i32) -> Result<(OwnedFd, OwnedFd)> {
    let dup = |fd: i32, name: &str| {
        crate::sys::dup_raw_fd(fd)
            .map_err(|e| Error::Value(format!("stdio: {name} fd {fd}: {}", strerror(&e))))
    };
    Ok((dup(out, "stdout")?, dup(err, "stderr")?))
}

fn write_id_maps(plan: &Plan, pid: Pid) -> Result<()> {
    let pid = pid.as_raw_nonzero().get();
    let write = |name: &str, data: &str| -> Result<()> {
        let path = format!("/proc/{pid}/{name}");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| start_io(format!("open {path}"), e))?;
        // The kernel wants the whole map in one write.
        let n = f
            .write(data.as_bytes())
            .map_err(|e| start_io(format!("write {path}"), e))?;
        if n != data.len() {
            return Err(start(format!("write {path}: short write")));
        }
        Ok(())
    };
    write("uid_map", &plan.uid_map)?;
    let setgroups = if plan.setgroups_allowed {
        "allow"
    } else {
        "deny"
    };
    write("setgroups", setgroups)?;
    write("gid_map", &plan.gid_map)
}

/// Read the error pipe until EOF: `None` when the child exec'd (or died without a word).
fn read_record(fd: &OwnedFd) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; child::RECORD_LEN];
    let mut got = 0;
    while got < buf.len() {
        match rustix::io::read(fd, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::INTR) => continue,
            Err(_) => break,
        }
    }
    if got == 0 {
        return None;
    }
    buf.truncate(got);
    Some(buf)
}

/// Write the pid atomically: a temporary file beside it, then rename.
fn write_pid_file(path: &Path, pid: i32) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(pid.to_string().as_bytes())?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// The one-line message for a child failure.
pub fn describe(plan: &Plan, f: &Failure) -> String {
    let err = errno_text(f.errno);
    let i = f.index as usize;
    let detail = String::from_utf8_lossy(f.detail())
        .trim()
        .replace('\n', " ");
    let detail = if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    };
    let mount = |i: usize| {
        plan.mounts
            .get(i)
            .map(|m| (m.target.display.as_str(), m.type_display.as_str()))
            .unwrap_or(("?", "?"))
    };
    let name = &plan.exec.name;
    match f.step {
        Step::Sync => "container setup failed: the parent went away".to_string(),
        Step::Prctl => format!("prctl failed: {err}"),
        Step::UserNsRoot => format!("become root in the new user namespace: {err}"),
        Step::Setns => match plan.join.get(i) {
            Some(j) => format!("join {} namespace {}: {err}", j.kind, j.path),
            None => format!("join namespace: {err}"),
        },
        Step::Unshare => format!("unshare namespaces: {err}"),
        Step::RootPropagation => format!("make / private in the new mount namespace: {err}"),
        Step::BindRoot => format!("bind mount rootfs {}: {err}", plan.rootfs_display),
        Step::OpenRoot => format!("open rootfs {}: {err}", plan.rootfs_display),
        Step::MountTarget => {
            let (dest, _) = mount(i);
            format!("mount {dest}: cannot resolve or create the target in the rootfs: {err}")
        }
        Step::MountSymlink => {
            let (dest, _) = mount(i);
            format!("mount target {dest} is a symlink in the image")
        }
        Step::Mount => {
            let (dest, ty) = mount(i);
            format!("mount {dest} ({ty}) failed: {err}{detail}")
        }
        Step::MountAttr => {
            let (dest, ty) = mount(i);
            format!("mount {dest} ({ty}): set mount flags: {err}")
        }
        Step::MountPropagation => {
            let (dest, ty) = mount(i);
            format!("mount {dest} ({ty}): set propagation: {err}")
        }
        Step::Device => match child::DEVICE_NAMES.get(i) {
            Some(d) => format!("create device /dev/{d}: {err}"),
            None => format!("create devices in /dev: {err}"),
        },
        Step::DevSymlink => format!(
            "create symlink /dev/{}: {err}",
            child::DEV_LINK_NAMES.get(i).unwrap_or(&"?")
        ),
        Step::OomScoreAdj => format!("set oom_score_adj: {err}"),
        Step::Sysctl => match plan.sysctls.get(i) {
            Some(s) => format!("set sysctl {}: {err}", s.key),
            None => format!("set sysctl: {err}"),
        },
        Step::SysctlNotProc => match plan.sysctls.get(i) {
            Some(s) => format!(
                "set sysctl {}: /proc/sys is not procfs in the container",
                s.key
            ),
            None => "set sysctl: /proc/sys is not procfs in the container".to_string(),
        },
        Step::ReadonlyPath => format!(
            "make {} read-only: {err}",
            plan.readonly_paths.get(i).map_or("?", |p| &p.display)
        ),
        Step::MaskedPath => format!(
            "mask {}: {err}",
            plan.masked_paths.get(i).map_or("?", |p| &p.display)
        ),
        Step::PivotRoot => {
            let what = [
                "chdir to rootfs",
                "pivot_root",
                "make old root rslave",
                "detach old root",
                "chdir /",
            ];
            format!("{} failed: {err}", what.get(i).unwrap_or(&"pivot_root"))
        }
        Step::RootReadonly => format!("make the root filesystem read-only: {err}"),
        Step::RootPropagationAfter => format!("set rootfs propagation: {err}"),
        Step::Hostname => format!("set hostname: {err}"),
        Step::Loopback => format!("bring up the loopback interface: {err}"),
        Step::Rlimit => match plan.rlimits.get(i) {
            Some(r) => format!("set {} to {}/{}: {err}", r.name, r.soft, r.hard),
            None => format!("set rlimit: {err}"),
        },
        Step::Cwd => format!("chdir to cwd {}: {err}", plan.cwd.display),
        Step::CwdUnreachable => format!("cwd {} is outside the container's root", plan.cwd.display),
        Step::KeepCaps => format!("prctl(PR_SET_KEEPCAPS): {err}"),
        Step::Bounding => format!("drop {} from the bounding set: {err}", caps::name(f.index)),
        Step::Setgroups => format!("setgroups: {err}"),
        Step::Setresgid => format!("setresgid({}): {err}", plan.gid),
        Step::Setresuid => format!("setresuid({}): {err}", plan.uid),
        Step::Capset => format!("capset: {err}"),
        Step::Ambient => format!("raise ambient {}: {err}", caps::name(f.index)),
        Step::NoNewPrivs => format!("prctl(PR_SET_NO_NEW_PRIVS): {err}"),
        Step::Seccomp => format!("install the seccomp filter: {err}"),
        Step::CloseFds => format!("close inherited file descriptors: {err}"),
        Step::Stdio => format!("redirect fd {} of the container: {err}", f.index),
        Step::ExecNotFound => format!("exec: {name:?}: executable file not found in $PATH"),
        Step::Exec => format!("exec: {name:?}: {}", err.to_lowercase()),
        Step::CgroupJoin => format!("join the container's cgroup: {err}"),
        Step::LinuxDevice => format!(
            "create device {}: {err}",
            plan.devices.get(i).map_or("?", |d| &d.display)
        ),
        Step::Init => format!("--init: fork the command under the init process: {err}"),
        Step::Console => format!(
            "set up the terminal: {} failed: {err}",
            [
                "open a pty on the container's /dev/ptmx",
                "send the pty",
                "make the pty stdio",
                "bind the pty to /dev/console"
            ]
            .get(i)
            .unwrap_or(&"pty")
        ),
    }
}

#[cfg(test)]
mod tests;

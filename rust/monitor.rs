//! The per-container monitor (`pyrun-runtime monitor`): what keeps a detached container after
//! the CLI that started it has exited, in the role conmon plays for Podman. One small native
//! process per container that
//! - starts the container from its bundle through [`crate::runtime::start_plan`] and reports
//!   the start (`ok PID` or `err CODE MESSAGE`) on a pipe to the CLI, then detaches from it;
//! - copies the container's stdout and stderr into a log file in Docker's json-file format,
//!   one `{"log","stream","time"}` record per line;
//! - reaps the container, records exit code, OOM kill and times in `state.json` (atomic
//!   replace), and applies the restart policy (Docker's: `no`, `on-failure[:N]`, `always`,
//!   `unless-stopped`, with a delay doubling from 100 ms up to a minute, reset after 10 s up);
//! - at the end unmounts the container's root and, for `--rm`, removes its directory.
//!
//! A stop asked by the user (`stop`, `kill`, `rm -f`) is announced with the `stop-requested`
//! file in the container directory, so that the restart policy does not bring it back.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::logfile::{self, LogWriter};
use crate::runtime::{self, Error};
use crate::timefmt;

/// monitor.json, written by the CLI next to the bundle.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The OCI bundle (config.json; root.path is the mounted overlay).
    pub bundle: PathBuf,
    /// The container directory: state.json, stop-requested.
    pub dir: PathBuf,
    /// The container's runtime directory (pid file, bundle, the root's mount point; on a
    /// tmpfs), removed with the container (`remove_to`); the pid file goes into `dir` without.
    #[serde(default)]
    pub run_dir: Option<PathBuf>,
    /// The json-file log; none = the output is discarded.
    #[serde(default)]
    pub log: Option<PathBuf>,
    #[serde(default)]
    pub restart: Restart,
    /// Unmount this (the container's root) when the container is done for good.
    #[serde(default)]
    pub unmount: Option<PathBuf>,
    /// `--rm`: rename the container directory to this path (in the store's tmp/) and delete it.
    #[serde(default)]
    pub remove_to: Option<PathBuf>,
    /// With `remove_to`: more directories to remove, each renamed first (path, trash path):
    /// the container's anonymous volumes.
    #[serde(default)]
    pub remove_also: Vec<(PathBuf, PathBuf)>,
    /// `-i`: keep the container's stdin open, fed by attached clients.
    #[serde(default)]
    pub stdin: bool,
    /// A command run (and waited for) when the container is done for good, before the
    /// unmount: the CLI's network release (veth, address, firewall rules, name records).
    #[serde(default)]
    pub on_exit: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restart {
    /// "no", "on-failure", "always" or "unless-stopped".
    #[serde(default)]
    pub name: String,
    /// on-failure's retry limit (0 = unlimited).
    #[serde(default)]
    pub max: u32,
}

impl Restart {
    fn wants(&self, exit_code: i32, restarts: u32) -> bool {
        match self.name.as_str() {
            "always" | "unless-stopped" => true,
            "on-failure" => exit_code != 0 && (self.max == 0 || restarts < self.max),
            _ => false,
        }
    }
}

pub const STOP_MARKER: &str = "stop-requested";

/// Field 22 of /proc/PID/stat: the process's start time in clock ticks since boot; with the
/// pid it names a process for good (pids are reused, start times of one pid are not).
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
}

/// A container's `state.json`, written by the process that runs it (the monitor, or the
/// `pyrun` executable replaying a run template): every write names that runner (pid and start
/// time), so a reader can tell a container whose runner is gone.
pub(crate) struct StateFile {
    dir: PathBuf,
    monitor_pid: i32,
    monitor_start: u64,
    /// fsync before the rename (a `--rm` container's state is not worth one).
    durable: bool,
}

impl StateFile {
    /// The state file of the container directory `dir`, run by this process.
    pub(crate) fn of_this_process(dir: &Path, durable: bool) -> StateFile {
        let monitor_pid = std::process::id() as i32;
        StateFile {
            dir: dir.to_path_buf(),
            monitor_pid,
            monitor_start: start_time(monitor_pid).unwrap_or(0),
            durable,
        }
    }

    /// Replace state.json with `fields` and the runner's (through a temporary file).
    pub(crate) fn try_write(
        &self,
        mut fields: serde_json::Map<String, serde_json::Value>,
    ) -> std::io::Result<()> {
        fields.insert("monitor_pid".into(), self.monitor_pid.into());
        fields.insert("monitor_start".into(), self.monitor_start.into());
        let tmp = self.dir.join(".state.json.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(serde_json::Value::Object(fields).to_string().as_bytes())?;
        if self.durable {
            f.sync_data()?;
        }
        std::fs::rename(&tmp, self.dir.join("state.json"))
    }

    fn write(&self, fields: serde_json::Map<String, serde_json::Value>) {
        if let Err(e) = self.try_write(fields) {
            eprintln!("pyrun-runtime monitor: write state.json: {e}");
        }
    }
}

macro_rules! fields {
    ($($k:expr => $v:expr),* $(,)?) => {{
        let mut m = serde_json::Map::new();
        $( m.insert($k.to_string(), serde_json::Value::from($v)); )*
        m
    }};
}

/// How one run of the container ended.
struct RunEnd {
    started_at: Option<String>,
    exit_code: i32,
    oom_killed: bool,
    cgroup: String,
    /// Started in its cgroup by clone3 (cgroup v2) rather than moved into it.
    cgroup_clone: bool,
    error: Option<String>,
    ran_for: Duration,
}

fn run_once(
    cfg: &Config,
    log: &mut LogWriter,
    state: &StateFile,
    restarts: u32,
    report: &mut Option<OwnedFd>,
    mut attach: Option<&mut logfile::Attach>,
) -> RunEnd {
    let began = Instant::now();
    let fail = |code: i32, msg: String| RunEnd {
        started_at: None,
        exit_code: code,
        oom_killed: false,
        cgroup: String::new(),
        cgroup_clone: false,
        error: Some(msg),
        ran_for: began.elapsed(),
    };
    let mut plan = match runtime::plan::build(&cfg.bundle) {
        Ok(p) => p,
        Err(Error::Start { msg, code }) => return fail(code, msg),
        Err(e) => return fail(125, format!("invalid container config: {e}")),
    };
    let mut readers = [None, None];
    let mut stdin_w = None;
    if cfg.stdin && !plan.terminal {
        match rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC) {
            Ok((r, w)) => {
                plan.stdin = Some(r);
                stdin_w = Some(w);
            }
            Err(e) => return fail(125, format!("pipe: {e}")),
        }
    }
    if !plan.terminal {
        let pipe = || rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC);
        let (out_r, out_w, err_r, err_w) = match (pipe(), pipe()) {
            (Ok((a, b)), Ok((c, d))) => (a, b, c, d),
            (Err(e), _) | (_, Err(e)) => return fail(125, format!("pipe: {e}")),
        };
        plan.stdio = Some((out_w, err_w));
        readers = [Some(out_r), Some(err_r)];
    }
    let pid_file = cfg.run_dir.as_deref().unwrap_or(&cfg.dir).join("pid");
    let started = runtime::start_plan(&plan, Some(&pid_file), None);
    drop(plan); // closes our copies of the write ends
    let mut started = match started {
        Ok(s) => s,
        Err(Error::Start { msg, code }) => return fail(code, msg),
        Err(e) => return fail(125, e.to_string()),
    };
    if let Some(master) = started.console.take() {
        // A terminal: one stream (stdout), read from the pty master we hold.
        if cfg.stdin {
            stdin_w = rustix::io::dup(&master).ok();
        }
        readers = [Some(master), None];
    }
    if let Some(a) = attach.as_deref_mut() {
        a.stdin = stdin_w;
        a.tty = readers[1].is_none(); // a terminal has one stream: the pty
    }
    let pid = started.pid_raw();
    let started_at = timefmt::now();
    state.write(fields! {
        "status" => "running",
        "pid" => pid,
        "pid_start" => start_time(pid).unwrap_or(0),
        "started_at" => started_at.as_str(),
        "restart_count" => restarts,
        "cgroup_clone" => started.cloned_into_cgroup,
    });
    if let Some(r) = report.take() {
        let _ = rustix::io::write(&r, format!("ok {pid}\n").as_bytes());
    }
    logfile::copy_output(readers, log, started.pid, attach);
    let Some(status) = runtime::reap(started.pid) else {
        return fail(125, "wait for the container process failed".into());
    };
    let cgroup_clone = started.cloned_into_cgroup;
    let out = started.finish(status);
    RunEnd {
        started_at: Some(started_at),
        exit_code: out.exit_code,
        oom_killed: out.oom_killed,
        cgroup: out.cgroup,
        cgroup_clone,
        error: None,
        ran_for: began.elapsed(),
    }
}

/// Sleep `d`, waking every 50 ms to see whether a stop was asked; true when one was.
fn sleep_unless_stopped(dir: &Path, d: Duration) -> bool {
    let end = Instant::now() + d;
    loop {
        if dir.join(STOP_MARKER).exists() {
            return true;
        }
        let now = Instant::now();
        if now >= end {
            return false;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// Run the container of `cfg` under its restart policy until it is done for good.
pub fn monitor(cfg: &Config, mut report: Option<OwnedFd>) -> i32 {
    let state = StateFile::of_this_process(&cfg.dir, true);
    let mut log = match LogWriter::new(cfg.log.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            let msg = format!(
                "open log {}: {}",
                cfg.log.as_deref().unwrap_or(Path::new("")).display(),
                runtime::strerror(&e)
            );
            if let Some(r) = report.take() {
                let _ = rustix::io::write(&r, format!("err 125 {msg}\n").as_bytes());
            }
            finish(cfg);
            return 1;
        }
    };
    // The attach socket: clients get the output, and with -i feed stdin.
    // Bound by a relative name from the container directory: socket paths are limited to
    // 108 bytes, a store's container directories are not. Clients connect the same way
    // (through /proc/self/fd/N of the directory).
    let sock = cfg.dir.join("attach.sock");
    let _ = std::fs::remove_file(&sock);
    let mut attach = std::env::set_current_dir(&cfg.dir)
        .and_then(|()| std::os::unix::net::UnixListener::bind("attach.sock"))
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map(|listener| logfile::Attach {
            listener,
            clients: Vec::new(),
            stdin: None,
            tty: false,
        })
        .map_err(|e| {
            eprintln!(
                "pyrun-runtime monitor: attach socket {}: {e}",
                sock.display()
            )
        })
        .ok();
    let mut restarts = 0u32;
    let mut delay = Duration::from_millis(100);
    loop {
        let end = run_once(
            cfg,
            &mut log,
            &state,
            restarts,
            &mut report,
            attach.as_mut(),
        );
        if let (Some(msg), Some(r)) = (&end.error, report.take()) {
            // The first start failed: the CLI reports it; no restart.
            let _ = rustix::io::write(&r, format!("err {} {msg}\n", end.exit_code).as_bytes());
            state.write(fields! {
                "status" => "created",
                "exit_code" => end.exit_code,
                "error" => msg.as_str(),
                "finished_at" => timefmt::now(),
            });
            finish(cfg);
            return 0;
        }
        let stopped = cfg.dir.join(STOP_MARKER).exists();
        let again = !stopped && cfg.restart.wants(end.exit_code, restarts);
        let mut f = fields! {
            "status" => if again { "restarting" } else { "exited" },
            "exit_code" => end.exit_code,
            "oom_killed" => end.oom_killed,
            "cgroup" => end.cgroup.as_str(),
            "cgroup_clone" => end.cgroup_clone,
            "finished_at" => timefmt::now(),
            "restart_count" => restarts,
        };
        if let Some(msg) = &end.error {
            f.insert("error".into(), msg.as_str().into());
        }
        if let Some(t) = &end.started_at {
            f.insert("started_at".into(), t.as_str().into());
        }
        state.write(f.clone());
        if !again {
            break;
        }
        if end.ran_for >= Duration::from_secs(10) {
            delay = Duration::from_millis(100);
        }
        if sleep_unless_stopped(&cfg.dir, delay) {
            f.insert("status".into(), "exited".into());
            state.write(f);
            break;
        }
        delay = (delay * 2).min(Duration::from_secs(60));
        restarts += 1;
    }
    finish(cfg);
    0
}

fn finish(cfg: &Config) {
    if let Some((program, args)) = cfg.on_exit.split_first() {
        match std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .status()
        {
            Ok(st) if st.success() => {}
            Ok(st) => eprintln!("pyrun-runtime monitor: {program}: {st}"),
            Err(e) => eprintln!("pyrun-runtime monitor: run {program}: {e}"),
        }
    }
    let mut unmounted = true;
    if let Some(root) = &cfg.unmount {
        if let Err(e) = runtime::overlay::unmount(root, true) {
            eprintln!("pyrun-runtime monitor: unmount {}: {e}", root.display());
            unmounted = false;
        }
    }
    if let Some(trash) = &cfg.remove_to {
        match std::fs::rename(&cfg.dir, trash) {
            Ok(()) => {
                if let Err(e) = std::fs::remove_dir_all(trash) {
                    eprintln!("pyrun-runtime monitor: remove {}: {e}", trash.display());
                }
            }
            Err(e) => eprintln!("pyrun-runtime monitor: remove {}: {e}", cfg.dir.display()),
        }
        for (dir, trash) in &cfg.remove_also {
            if std::fs::rename(dir, trash).is_ok() {
                let _ = std::fs::remove_dir_all(trash);
            }
        }
        // Never through a root still mounted there: the store's sweep retries later.
        if let (Some(run_dir), true) = (&cfg.run_dir, unmounted) {
            let _ = std::fs::remove_dir_all(run_dir);
        }
    }
}

fn usage() -> i32 {
    eprintln!("usage: pyrun-runtime monitor --config FILE [--report-fd N] [--foreground]");
    2
}

/// `pyrun-runtime monitor --config monitor.json [--report-fd N] [--foreground]`: read the
/// config, detach (fork; the parent exits at once so the caller can reap it; setsid), and
/// monitor. The report fd gets one line once the container has started or failed to.
pub fn cli(args: &[std::ffi::OsString]) -> i32 {
    let mut config = None;
    let mut report_fd: Option<i32> = None;
    let mut foreground = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--config") => config = it.next().map(PathBuf::from),
            Some("--report-fd") => {
                report_fd = match it.next().and_then(|s| s.to_str()?.parse().ok()) {
                    Some(n) if n > 2 => Some(n),
                    _ => return usage(),
                }
            }
            Some("--foreground") => foreground = true,
            _ => return usage(),
        }
    }
    let Some(config) = config else {
        return usage();
    };
    let report = report_fd.map(|fd| {
        // SAFETY: the caller passed this fd to us for our exclusive use.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let _ = rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC);
        fd
    });
    let fail = |msg: String| {
        eprintln!("pyrun-runtime monitor: {msg}");
        if let Some(r) = &report {
            let _ = rustix::io::write(r.as_fd(), format!("err 125 {msg}\n").as_bytes());
        }
        1
    };
    let cfg: Config = match std::fs::read(&config) {
        Ok(b) => match serde_json::from_slice(&b) {
            Ok(c) => c,
            Err(e) => return fail(format!("{}: {e}", config.display())),
        },
        Err(e) => {
            return fail(format!(
                "read {}: {}",
                config.display(),
                runtime::strerror(&e)
            ))
        }
    };
    if !foreground {
        // SAFETY: single-threaded at this point; the child only continues this program.
        match unsafe { libc::fork() } {
            -1 => return fail(format!("fork: {}", std::io::Error::last_os_error())),
            0 => {
                let _ = rustix::process::setsid();
            }
            _ => return 0,
        }
    }
    // SAFETY: setting a signal to SIG_IGN.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    monitor(&cfg, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policy_decisions() {
        let r = |name: &str, max| Restart {
            name: name.into(),
            max,
        };
        assert!(!r("no", 0).wants(1, 0));
        assert!(!r("", 0).wants(1, 0));
        assert!(r("always", 0).wants(0, 99));
        assert!(r("unless-stopped", 0).wants(0, 0));
        assert!(!r("on-failure", 0).wants(0, 0));
        assert!(r("on-failure", 0).wants(3, 1000));
        assert!(r("on-failure", 2).wants(3, 1));
        assert!(!r("on-failure", 2).wants(3, 2));
    }

    #[test]
    fn start_time_of_self() {
        assert!(start_time(std::process::id() as i32).unwrap() > 0);
        assert_eq!(start_time(0), None);
    }
}

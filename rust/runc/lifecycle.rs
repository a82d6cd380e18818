//! The lifecycle commands: create, start, run, exec, kill, delete.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use super::args::{flag, parse, Flag};
use super::state::{self, Container, Saved, Status};
use super::{hooks, Fail, Global, Res};
use crate::runtime::{self, plan, spec};

const CREATE_FLAGS: &[Flag] = &[
    flag(&["bundle", "b"], true),
    flag(&["console-socket"], true),
    flag(&["pid-file"], true),
    flag(&["pidfd-socket"], true),
    flag(&["no-pivot"], false),
    flag(&["no-new-keyring"], false),
    flag(&["preserve-fds"], true),
];

const RUN_FLAGS: &[Flag] = &[
    flag(&["bundle", "b"], true),
    flag(&["console-socket"], true),
    flag(&["pid-file"], true),
    flag(&["pidfd-socket"], true),
    flag(&["no-pivot"], false),
    flag(&["no-new-keyring"], false),
    flag(&["preserve-fds"], true),
    flag(&["detach", "d"], false),
    flag(&["keep"], false),
    flag(&["no-subreaper"], false),
];

fn io_fail(what: impl std::fmt::Display, e: impl Into<std::io::Error>) -> Fail {
    Fail::msg(format!("{what}: {}", runtime::strerror(&e.into())))
}

/// The container directory being created: removed again unless `keep` is called.
struct NewDir {
    dir: PathBuf,
    keep: bool,
}

impl Drop for NewDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// What `create` and `run` share: the parsed bundle, the plan and the record to save.
struct Prepared {
    plan: plan::Plan,
    saved: Saved,
    dir: NewDir,
    terminal: bool,
}

/// runc's `--systemd-cgroup` path "slice:prefix:name" → the cgroupfs path systemd would use
/// ("/system.slice/prefix-name.scope"; "a-b.slice" nests as "/a.slice/a-b.slice").
pub fn systemd_path(spec_path: &str, id: &str) -> Result<(String, String), Fail> {
    let (slice, prefix, name) = if spec_path.is_empty() {
        ("", "", id)
    } else {
        let parts: Vec<&str> = spec_path.split(':').collect();
        if parts.len() != 3 {
            return Err(Fail::msg(format!(
                "expected cgroupsPath to be of format \"slice:prefix:name\" for systemd cgroups, got {spec_path:?} instead"
            )));
        }
        (parts[0], parts[1], parts[2])
    };
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    if !slice.ends_with(".slice") || slice.contains('/') {
        return Err(Fail::msg(format!("invalid slice name: {slice}")));
    }
    let mut path = String::new();
    let stem = slice.trim_end_matches(".slice");
    if slice != "-.slice" {
        let mut acc = String::new();
        for part in stem.split('-') {
            if part.is_empty() {
                return Err(Fail::msg(format!("invalid slice name: {slice}")));
            }
            if !acc.is_empty() {
                acc.push('-');
            }
            acc.push_str(part);
            path.push('/');
            path.push_str(&acc);
            path.push_str(".slice");
        }
    }
    let unit = if name.ends_with(".slice") {
        name.to_string()
    } else if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    path.push('/');
    path.push_str(&unit);
    Ok((path, unit))
}

/// Whether systemd is the init system (the check sd_booted does).
fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// Read and parse `<bundle>/config.json`, and build the container's plan and record.
fn prepare(g: &Global, id: &str, bundle: Option<&str>, for_run: bool) -> Res<Prepared> {
    state::check_id(id)?;
    let bundle = match bundle {
        Some(b) if !b.is_empty() => PathBuf::from(b),
        _ => std::env::current_dir().map_err(|e| io_fail("current directory", e))?,
    };
    let bundle = std::path::absolute(&bundle).map_err(|e| io_fail("bundle", e))?;
    let config_path = bundle.join("config.json");
    let bytes = std::fs::read(&config_path).map_err(|e| {
        Fail::msg(format!(
            "open {}: {}",
            config_path.display(),
            runtime::strerror(&e)
        ))
    })?;
    let mut spec = spec::parse(&bytes).map_err(Fail::msg)?;

    // The cgroup: every container gets one (pause, ps, kill --all and events need it), at
    // linux.cgroupsPath, else /<id> as runc does.
    let linux = spec.linux.get_or_insert_with(Default::default);
    let mut systemd_unit = None;
    let cg = if g.systemd_cgroup {
        let (path, unit) = systemd_path(linux.cgroups_path.as_deref().unwrap_or(""), id)?;
        systemd_unit = Some(unit);
        path
    } else {
        match linux.cgroups_path.as_deref() {
            Some(p) if !p.is_empty() => {
                if p.contains(':') && !p.starts_with('/') {
                    return Err(Fail::msg(format!(
                        "cgroupsPath {p:?} is in systemd's slice:prefix:name form: pass --systemd-cgroup"
                    )));
                }
                p.to_string()
            }
            _ => format!("/{id}"),
        }
    };
    linux.cgroups_path = Some(cg.clone());
    let namespaces: Vec<String> = linux.namespaces.iter().map(|n| n.kind.clone()).collect();
    let terminal = spec.process.as_ref().is_some_and(|p| p.terminal);

    std::fs::create_dir_all(&g.root)
        .map_err(|e| io_fail(format!("create {}", g.root.display()), e))?;
    let dir = state::container_dir(&g.root, id);
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Fail::msg(format!("container with id exists: {id}")))
        }
        Err(e) => return Err(io_fail(format!("create {}", dir.display()), e)),
    }
    let dir = NewDir { dir, keep: false };
    // The config as created: exec and delete use it, whatever happens to the bundle.
    state::write_atomic(&dir.dir.join("config.json"), &bytes)
        .map_err(|e| io_fail("save config.json", e))?;

    let mut plan = plan::from_spec(&spec, &bundle, None)?;
    plan.detached = !for_run;
    let rootfs = String::from_utf8_lossy(plan.rootfs.to_bytes()).into_owned();
    let saved = Saved {
        id: id.to_string(),
        pid: 0,
        pid_start: 0,
        bundle: bundle.display().to_string(),
        rootfs,
        created: crate::timefmt::now(),
        owner: state::owner_name(rustix::process::geteuid().as_raw()),
        oci_version: spec.oci_version.clone(),
        annotations: spec.annotations.clone(),
        hooks: spec.hooks.clone(),
        cgroup: Some(cg),
        namespaces,
        systemd_unit,
    };
    Ok(Prepared {
        plan,
        saved,
        dir,
        terminal,
    })
}

/// The hooks that run before the container is released: prestart, createRuntime (runtime
/// namespace) and createContainer (in the container's namespaces, before its root is set
/// up), with status "creating". With `--systemd-cgroup` where systemd runs, the scope unit
/// is made here too.
fn on_created(g: &Global, saved: &Saved) -> plan::OnCreated {
    let saved = saved.clone();
    let systemd = g.systemd_cgroup && systemd_running();
    Box::new(move |pid| {
        if systemd {
            if let Some(unit) = &saved.systemd_unit {
                start_scope(unit, saved.cgroup.as_deref().unwrap_or(""), pid)?;
            }
        }
        let st = state::state_value(&saved, "creating", pid);
        let h = &saved.hooks;
        hooks::run("prestart", &h.prestart, &st, None)?;
        hooks::run("createRuntime", &h.create_runtime, &st, None)?;
        hooks::run("createContainer", &h.create_container, &st, Some(pid))
    })
}

/// A transient scope unit holding `pid` (Delegate=yes), through busctl, as runc's systemd
/// driver does over D-Bus; the limits are then written to cgroupfs by the manager.
fn start_scope(unit: &str, path: &str, pid: i32) -> Result<(), String> {
    let slice = path
        .rsplit('/')
        .nth(1)
        .filter(|s| s.ends_with(".slice"))
        .unwrap_or("system.slice");
    let out = std::process::Command::new("busctl")
        .args([
            "call",
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "StartTransientUnit",
            "ssa(sv)a(sa(sv))",
            unit,
            "fail",
            "3",
            "PIDs",
            "au",
            "1",
            &pid.to_string(),
            "Delegate",
            "b",
            "true",
            "Slice",
            "s",
            slice,
            "0",
        ])
        .output()
        .map_err(|e| format!("systemd: run busctl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "systemd: start unit {unit}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Hand the pty master to `--console-socket` as runc does (SCM_RIGHTS).
fn send_console(socket: &str, master: &OwnedFd) -> Res<()> {
    let stream = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| io_fail(format!("connect to console socket {socket}"), e))?;
    runtime::sys::send_fd(stream.as_fd(), master.as_fd())
        .map_err(|e| io_fail(format!("send the pty to {socket}"), e))
}

fn preserve_fds(p: &super::Parsed) -> Res<u32> {
    let mut n: u32 = match p.get("preserve-fds") {
        Some(v) => v
            .parse()
            .map_err(|_| Fail::msg(format!("--preserve-fds: invalid number {v:?}")))?,
        None => 0,
    };
    // Socket activation (LISTEN_FDS) passes its fds on too, as runc does.
    if let Some(l) = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    {
        n = n.max(l);
    }
    Ok(n)
}

/// `create ID`: set the container up, leave its process waiting for `start`.
pub fn create(g: &Global, args: &[String]) -> Res<i32> {
    let p = parse("create", args, CREATE_FLAGS, false)?;
    let id = p.id("create")?;
    p.max_args("create", 1)?;
    let mut prep = prepare(g, id, p.get("bundle"), false)?;
    let console_socket = p.get("console-socket");
    if prep.terminal && console_socket.is_none() {
        return Err(Fail::msg(
            "cannot allocate tty if runc will detach without setting console socket",
        ));
    }
    if !prep.terminal && console_socket.is_some() {
        return Err(Fail::msg(
            "cannot use console socket if runc will not detach or allocate tty",
        ));
    }
    prep.plan.preserve_fds = preserve_fds(&p)?;
    prep.plan.no_pivot = p.has("no-pivot");
    let fifo = prep.dir.dir.join("exec.fifo");
    rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, Mode::from_raw_mode(0o622))
        .map_err(|e| io_fail("create exec.fifo", e))?;
    let gate = rustix::fs::open(&fifo, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| io_fail("open exec.fifo", e))?;
    prep.plan.gate = Some(gate);
    prep.plan.on_created = Some(on_created(g, &prep.saved));
    let pid_file = p.get("pid-file").map(PathBuf::from);
    let started = runtime::start_plan(&prep.plan, pid_file.as_deref(), None)?;
    let pid = started.pid_raw();
    prep.saved.pid = pid;
    prep.saved.pid_start = crate::monitor::start_time(pid).unwrap_or(0);
    let master = started.detach();
    let r = (|| {
        if let (Some(sock), Some(m)) = (console_socket, &master) {
            send_console(sock, m)?;
        }
        state::save(&prep.dir.dir, &prep.saved)
    })();
    if let Err(e) = r {
        runtime::sys::kill(pid, libc::SIGKILL);
        destroy_cgroup(&prep.saved);
        return Err(e);
    }
    prep.dir.keep = true;
    Ok(0)
}

/// `start ID`: run startContainer hooks, let the created process exec, then poststart.
pub fn start(g: &Global, args: &[String]) -> Res<i32> {
    let p = parse("start", args, &[], false)?;
    let id = p.id("start")?;
    p.max_args("start", 1)?;
    let c = Container::load(&g.root, id)?;
    match c.status() {
        Status::Created => {}
        Status::Stopped => return Err(Fail::msg("cannot start a container that has stopped")),
        _ => return Err(Fail::msg("cannot start an already running container")),
    }
    let st = c.state_json(Status::Created);
    if let Err(e) = hooks::run(
        "startContainer",
        &c.saved.hooks.start_container,
        &st,
        Some(c.saved.pid),
    ) {
        runtime::sys::kill(c.saved.pid, libc::SIGKILL);
        return Err(Fail::msg(e));
    }
    release(&c)?;
    let st = c.state_json(Status::Running);
    if let Err(e) = hooks::run("poststart", &c.saved.hooks.poststart, &st, None) {
        g.warn(&e);
    }
    Ok(0)
}

/// Write the byte the created process waits for (the fifo goes first, so `state` never
/// says "created" for a started container).
fn release(c: &Container) -> Res<()> {
    let fifo = c.fifo();
    let fd = match rustix::fs::open(
        &fifo,
        OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NXIO) => {
            let _ = std::fs::remove_file(&fifo);
            return Err(Fail::msg("cannot start a container that has stopped"));
        }
        Err(e) => return Err(io_fail("open exec.fifo", e)),
    };
    let _ = std::fs::remove_file(&fifo);
    rustix::io::write(&fd, &[0u8]).map_err(|e| io_fail("write exec.fifo", e))?;
    Ok(())
}

/// `run ID`: create and start; in the foreground (the default) wait for the process,
/// forwarding signals, then delete the container (unless `--keep`) and exit with its status.
pub fn run(g: &Global, args: &[String]) -> Res<i32> {
    let p = parse("run", args, RUN_FLAGS, false)?;
    let id = p.id("run")?;
    p.max_args("run", 1)?;
    if p.has("detach") {
        let mut cargs: Vec<String> = Vec::new();
        for name in ["bundle", "console-socket", "pid-file", "preserve-fds"] {
            if let Some(v) = p.get(name) {
                cargs.push(format!("--{name}={v}"));
            }
        }
        cargs.push(id.to_string());
        create(g, &cargs)?;
        return start(g, &[id.to_string()]);
    }
    let mut prep = prepare(g, id, p.get("bundle"), true)?;
    let console_socket = p.get("console-socket");
    prep.plan.preserve_fds = preserve_fds(&p)?;
    prep.plan.no_pivot = p.has("no-pivot");
    prep.plan.on_created = Some(on_created(g, &prep.saved));
    let mut forwarder = runtime::signals::Forwarder::install()
        .map_err(|e| io_fail("install signal handlers", e))?;
    let pid_file = p.get("pid-file").map(PathBuf::from);
    if prep.terminal && console_socket.is_none() {
        runtime::TerminalIo {
            stdin: Some(0),
            out: Some(1),
        }
        .fill_size(&mut prep.plan);
    }
    let mut started = runtime::start_plan(&prep.plan, pid_file.as_deref(), Some(&mut forwarder))?;
    let pid = started.pid;
    prep.saved.pid = started.pid_raw();
    prep.saved.pid_start = crate::monitor::start_time(prep.saved.pid).unwrap_or(0);
    state::save(&prep.dir.dir, &prep.saved)?;
    prep.dir.keep = p.has("keep");
    let st = state::state_value(&prep.saved, "running", prep.saved.pid);
    hooks::run(
        "startContainer",
        &prep.saved.hooks.start_container,
        &st,
        None,
    )
    .unwrap_or_else(|e| g.warn(&e));
    if let Err(e) = hooks::run("poststart", &prep.saved.hooks.poststart, &st, None) {
        g.warn(&e);
    }
    if let Some(master) = started.console.take() {
        match console_socket {
            Some(sock) => send_console(sock, &master)?,
            None => runtime::console::proxy(&master, pid, Some(0), 1, None),
        }
    }
    runtime::wait_exited(pid);
    forwarder.unwatch();
    let status = runtime::reap(pid).ok_or_else(|| Fail::msg("wait for the container failed"))?;
    let outcome = started.finish(status);
    let st = state::state_value(&prep.saved, "stopped", 0);
    if let Err(e) = hooks::run("poststop", &prep.saved.hooks.poststop, &st, None) {
        g.warn(&e);
    }
    Ok(outcome.exit_code)
}

const EXEC_FLAGS: &[Flag] = &[
    flag(&["process", "p"], true),
    flag(&["detach", "d"], false),
    flag(&["pid-file"], true),
    flag(&["pidfd-socket"], true),
    flag(&["console-socket"], true),
    flag(&["tty", "t"], false),
    flag(&["cwd"], true),
    flag(&["env", "e"], true),
    flag(&["user", "u"], true),
    flag(&["additional-gids", "g"], true),
    flag(&["cap", "c"], true),
    flag(&["no-new-privs"], false),
    flag(&["preserve-fds"], true),
    flag(&["apparmor"], true),
    flag(&["process-label"], true),
    flag(&["cgroup"], true),
    flag(&["ignore-paused"], false),
];

/// The process of `exec`: `--process FILE` (a runtime-spec process object), else the
/// container's own process with the command line and flags applied.
fn exec_process(p: &super::Parsed, config: &serde_json::Value) -> Res<serde_json::Value> {
    if let Some(file) = p.get("process") {
        let bytes = std::fs::read(file).map_err(|e| io_fail(format!("open {file}"), e))?;
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Fail::msg(format!("process {file}: {e}")))?;
        return Ok(v);
    }
    let cmd = &p.positional[1..];
    if cmd.is_empty() {
        return Err(Fail::msg("exec: arguments must not be empty"));
    }
    let mut proc = config.get("process").cloned().unwrap_or_default();
    proc["args"] = serde_json::json!(cmd);
    proc["terminal"] = serde_json::Value::Bool(p.has("tty"));
    if let Some(cwd) = p.get("cwd") {
        proc["cwd"] = cwd.into();
    }
    if !p.all("env").is_empty() {
        let mut env: Vec<serde_json::Value> = proc["env"].as_array().cloned().unwrap_or_default();
        env.extend(
            p.all("env")
                .iter()
                .map(|e| serde_json::Value::from(e.as_str())),
        );
        proc["env"] = env.into();
    }
    if let Some(u) = p.get("user") {
        let (uid, gid) = u.split_once(':').unwrap_or((u, "0"));
        let parse_id = |v: &str| {
            v.parse::<u32>()
                .map_err(|_| Fail::msg(format!("exec --user: {u:?} is not UID[:GID]")))
        };
        proc["user"] = serde_json::json!({"uid": parse_id(uid)?, "gid": parse_id(gid)?});
    }
    if let Some(g) = p.get("additional-gids") {
        let gids: Result<Vec<u32>, _> = g.split(',').map(|x| x.trim().parse::<u32>()).collect();
        proc["user"]["additionalGids"] = serde_json::json!(
            gids.map_err(|_| Fail::msg(format!("exec --additional-gids: invalid {g:?}")))?
        );
    }
    if !p.all("cap").is_empty() {
        for set in ["bounding", "effective", "permitted"] {
            let mut caps: Vec<serde_json::Value> = proc["capabilities"][set]
                .as_array()
                .cloned()
                .unwrap_or_default();
            caps.extend(
                p.all("cap")
                    .iter()
                    .map(|c| serde_json::Value::from(c.as_str())),
            );
            proc["capabilities"][set] = caps.into();
        }
    }
    if p.has("no-new-privs") {
        proc["noNewPrivileges"] = true.into();
    }
    Ok(proc)
}

fn ns_file(kind: &str) -> &str {
    match kind {
        "mount" => "mnt",
        "network" => "net",
        other => other,
    }
}

/// `exec ID`: run another process in the container's namespaces and cgroup.
pub fn exec(g: &Global, args: &[String]) -> Res<i32> {
    let p = parse("exec", args, EXEC_FLAGS, true)?;
    let id = p.id("exec")?;
    let c = Container::load(&g.root, id)?;
    match c.status() {
        Status::Stopped => return Err(Fail::msg("cannot exec in a stopped container")),
        Status::Paused if !p.has("ignore-paused") => {
            return Err(Fail::msg("cannot exec in a paused container"))
        }
        _ => {}
    }
    let config_bytes = std::fs::read(c.dir.join("config.json"))
        .map_err(|e| io_fail("read the saved config.json", e))?;
    let mut config: serde_json::Value = serde_json::from_slice(&config_bytes)
        .map_err(|e| Fail::msg(format!("saved config.json: {e}")))?;
    let process = exec_process(&p, &config)?;
    let terminal = process
        .get("terminal")
        .and_then(|t| t.as_bool())
        .unwrap_or(false);
    config["process"] = process;
    let pid = c.saved.pid;
    let namespaces: Vec<serde_json::Value> = c
        .saved
        .namespaces
        .iter()
        .map(|k| serde_json::json!({"type": k, "path": format!("/proc/{pid}/ns/{}", ns_file(k))}))
        .collect();
    config["linux"]["namespaces"] = namespaces.into();
    let bytes = serde_json::to_vec(&config).unwrap_or_default();
    let spec =
        spec::parse(&bytes).map_err(|e| Fail::msg(e.replacen("config.json", "process", 1)))?;
    let mut plan = plan::from_spec(&spec, &c.dir, Some(pid))?;
    plan.preserve_fds = preserve_fds(&p)?;
    let detach = p.has("detach");
    let console_socket = p.get("console-socket");
    if terminal && detach && console_socket.is_none() {
        return Err(Fail::msg(
            "cannot allocate tty if runc will detach without setting console socket",
        ));
    }
    let pid_file = p.get("pid-file").map(PathBuf::from);
    if !detach && console_socket.is_none() {
        let outcome = runtime::run_foreground(plan, pid_file.as_deref(), None, terminal, None)?;
        return Ok(outcome.exit_code);
    }
    plan.detached = detach;
    let mut forwarder = runtime::signals::Forwarder::install()
        .map_err(|e| io_fail("install signal handlers", e))?;
    let mut started = runtime::start_plan(
        &plan,
        pid_file.as_deref(),
        (!detach).then_some(&mut forwarder),
    )?;
    if let (Some(sock), Some(m)) = (console_socket, started.console.take()) {
        send_console(sock, &m)?;
    }
    if detach {
        started.detach();
        return Ok(0);
    }
    runtime::wait_exited(started.pid);
    forwarder.unwatch();
    let status = runtime::reap(started.pid).ok_or_else(|| Fail::msg("wait failed"))?;
    Ok(started.finish(status).exit_code)
}

/// A signal by number, name or SIG-name.
pub fn parse_signal(s: &str) -> Res<i32> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
        return Err(Fail::msg(format!("invalid signal number: {s}")));
    }
    let name = s.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => {
            if let Some(off) = name
                .strip_prefix("RTMIN+")
                .and_then(|v| v.parse::<i32>().ok())
            {
                return Ok(libc::SIGRTMIN() + off);
            }
            return Err(Fail::msg(format!("unknown signal {s:?}")));
        }
    };
    Ok(n)
}

/// `kill ID [SIGNAL]`: signal the init process (`--all`: every process of the cgroup).
pub fn kill(g: &Global, args: &[String]) -> Res<i32> {
    let p = parse("kill", args, &[flag(&["all", "a"], false)], false)?;
    let id = p.id("kill")?;
    p.max_args("kill", 2)?;
    let sig = parse_signal(p.positional.get(1).map(String::as_str).unwrap_or("SIGTERM"))?;
    let c = Container::load(&g.root, id)?;
    if p.has("all") {
        if let Some(m) = cgroup_of(&c.saved) {
            let pids = m.pids();
            if !pids.is_empty() {
                for pid in pids {
                    runtime::sys::kill(pid, sig);
                }
                return Ok(0);
            }
        }
    }
    if c.status() == Status::Stopped {
        return Err(Fail::msg("container not running"));
    }
    if rustix::process::kill_process(
        rustix::process::Pid::from_raw(c.saved.pid).expect("a saved pid is positive"),
        signal_of(sig)?,
    )
    .is_err()
    {
        return Err(Fail::msg("container not running"));
    }
    Ok(0)
}

fn signal_of(n: i32) -> Res<rustix::process::Signal> {
    rustix::process::Signal::from_named_raw(n)
        .or_else(|| {
            // SAFETY: a real-time signal number the kernel accepts (checked by parse_signal).
            Some(unsafe { rustix::process::Signal::from_raw_unchecked(n) })
        })
        .ok_or_else(|| Fail::msg(format!("invalid signal {n}")))
}

pub fn cgroup_of(s: &Saved) -> Option<Box<dyn crate::cgroups::Manager>> {
    let path = s.cgroup.as_deref()?;
    crate::cgroups::existing(Path::new(crate::cgroups::ROOT), path).ok()
}

fn destroy_cgroup(s: &Saved) {
    if let Some(mut m) = cgroup_of(s) {
        if m.frozen() {
            let _ = m.freeze(false);
        }
        let _ = m.destroy();
    }
}

/// Kill what is left of the container and wait (briefly) until its processes are gone.
fn kill_all(c: &Container) {
    if c.is_alive() {
        runtime::sys::kill(c.saved.pid, libc::SIGKILL);
    }
    if let Some(m) = cgroup_of(&c.saved) {
        if m.frozen() {
            let _ = m.freeze(false);
        }
        for pid in m.pids() {
            runtime::sys::kill(pid, libc::SIGKILL);
        }
    }
    for _ in 0..1000 {
        let cg_empty = cgroup_of(&c.saved).is_none_or_empty();
        if !c.is_alive() && cg_empty {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

trait EmptyCgroup {
    fn is_none_or_empty(&self) -> bool;
}

impl EmptyCgroup for Option<Box<dyn crate::cgroups::Manager>> {
    fn is_none_or_empty(&self) -> bool {
        match self {
            Some(m) => m.pids().is_empty(),
            None => true,
        }
    }
}

/// `delete ID`: remove a stopped (or created) container; `--force` kills a running one.
pub fn delete(g: &Global, args: &[String]) -> Res<i32> {
    let p = parse("delete", args, &[flag(&["force", "f"], false)], false)?;
    let id = p.id("delete")?;
    p.max_args("delete", 1)?;
    let force = p.has("force");
    let c = match Container::load(&g.root, id) {
        Ok(c) => c,
        Err(e) if e.msg == "container does not exist" => {
            // A create that died half-way may have left a directory without state.json.
            state::check_id(id)?;
            let _ = std::fs::remove_dir_all(state::container_dir(&g.root, id));
            return if force { Ok(0) } else { Err(e) };
        }
        Err(e) => return Err(e),
    };
    match c.status() {
        Status::Stopped | Status::Created => {}
        s if !force => {
            return Err(Fail::msg(format!(
                "cannot delete container {id} that is not stopped: {}",
                s.as_str()
            )))
        }
        _ => {}
    }
    kill_all(&c);
    destroy_cgroup(&c.saved);
    let st = c.state_json(Status::Stopped);
    if let Err(e) = hooks::run("poststop", &c.saved.hooks.poststop, &st, None) {
        g.warn(&e);
    }
    std::fs::remove_dir_all(&c.dir)
        .map_err(|e| io_fail(format!("remove {}", c.dir.display()), e))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_paths() {
        assert_eq!(
            systemd_path("system.slice:docker:abc", "x").unwrap(),
            (
                "/system.slice/docker-abc.scope".to_string(),
                "docker-abc.scope".to_string()
            )
        );
        assert_eq!(
            systemd_path("a-b.slice:p:n", "x").unwrap().0,
            "/a.slice/a-b.slice/p-n.scope"
        );
        assert_eq!(systemd_path("", "id").unwrap().0, "/system.slice/id.scope");
        assert_eq!(
            systemd_path(":cri:n", "x").unwrap().0,
            "/system.slice/cri-n.scope"
        );
        assert!(systemd_path("/a/b", "x").is_err());
        assert!(systemd_path("bad:p:n", "x").is_err());
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("KILL").unwrap(), 9);
        assert_eq!(parse_signal("sigterm").unwrap(), 15);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("0").is_err());
    }
}

//! runtime-spec hooks: each one a process given the container's state JSON on stdin, with
//! its own args and env and an optional timeout (killed past it). Hooks of the runtime
//! namespace run as children of the CLI; `in_container` ones first join the container's
//! namespaces and root (startContainer: the path resolves in the container).

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::runtime::spec::Hook;

/// Run `hooks` in order; the first failure is returned as one line naming the hook.
pub fn run(
    kind: &str,
    hooks: &[Hook],
    state: &serde_json::Value,
    in_container: Option<i32>,
) -> Result<(), String> {
    let input = serde_json::to_vec(state).unwrap_or_default();
    for (i, h) in hooks.iter().enumerate() {
        run_one(h, &input, in_container)
            .map_err(|e| format!("{kind} hook #{i} ({}): {e}", h.path))?;
    }
    Ok(())
}

fn run_one(h: &Hook, input: &[u8], in_container: Option<i32>) -> Result<(), String> {
    let mut cmd = Command::new(&h.path);
    if let Some((arg0, rest)) = h.args.split_first() {
        cmd.arg0(arg0).args(rest);
    }
    cmd.env_clear();
    for kv in &h.env {
        match kv.split_once('=') {
            Some((k, v)) => cmd.env(k, v),
            None => cmd.env(kv, ""),
        };
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(pid) = in_container {
        let ns: Vec<(std::fs::File, &str)> = ["user", "ipc", "uts", "net", "pid", "cgroup", "mnt"]
            .iter()
            .filter(|n| differs(pid, n))
            .filter_map(|n| {
                std::fs::File::open(format!("/proc/{pid}/ns/{n}"))
                    .ok()
                    .map(|f| (f, *n))
            })
            .collect();
        let root = std::fs::File::open(format!("/proc/{pid}/root"))
            .map_err(|e| format!("open the container's root: {e}"))?;
        // SAFETY: the closure only makes system calls (setns, fchdir, chroot) on fds opened
        // before the fork; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                use std::os::fd::AsRawFd;
                for (f, _) in &ns {
                    if libc::setns(f.as_raw_fd(), 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if libc::fchdir(root.as_raw_fd()) != 0 || libc::chroot(c".".as_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::chdir(c"/".as_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().map_err(|e| crate::runtime::strerror(&e))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is not a failure.
        let _ = stdin.write_all(input);
    }
    let deadline = h
        .timeout
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) => {}
            Err(e) => return Err(crate::runtime::strerror(&e)),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("timed out after {} s", h.timeout.unwrap_or(0)));
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    if status.success() {
        return Ok(());
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    let err = err.trim().replace('\n', " ");
    let what = match status.code() {
        Some(c) => format!("exit status {c}"),
        None => format!("{status}"),
    };
    Err(if err.is_empty() {
        what
    } else {
        format!("{what}: {err}")
    })
}

/// Whether the container's namespace `ns` is not this process's own.
fn differs(pid: i32, ns: &str) -> bool {
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}"));
    let ours = std::fs::read_link(format!("/proc/self/ns/{ns}"));
    match (theirs, ours) {
        (Ok(a), Ok(b)) => a != b,
        _ => false,
    }
}

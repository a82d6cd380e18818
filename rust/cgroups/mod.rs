//! cgroup resource limits for the runtime: [`v1`] (one hierarchy per controller under
//! /sys/fs/cgroup/<controller>) and [`v2`] (the unified hierarchy). Every manager takes the
//! cgroupfs root as a parameter, so the unit tests run against a temporary directory tree.
//!
//! Errors are one line naming the file: `cgroup: write memory.limit_in_bytes=1: Invalid argument`.

pub mod v1;
pub mod v2;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

#[cfg(test)]
mod tests;

/// `linux.resources` as the managers apply it (OCI runtime-spec units: bytes, shares, µs).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Resources {
    /// memory.limit (bytes); -1 = unlimited.
    pub memory_limit: Option<i64>,
    /// memory.swap: memory + swap (bytes); -1 = unlimited.
    pub memory_swap: Option<i64>,
    pub cpu_shares: Option<u64>,
    /// cpu.quota (µs per period); -1 = unlimited.
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpus: Option<String>,
    pub mems: Option<String>,
    /// pids.limit; -1 (or 0 from Docker's CLI, mapped before) = unlimited.
    pub pids_limit: Option<i64>,
    /// Device cgroup rules (allow, "c 1:3 rwm") in order; v1 only (v2 needs an eBPF program).
    pub device_rules: Vec<(bool, String)>,
}

impl Resources {
    pub fn wants_memory(&self) -> bool {
        self.memory_limit.is_some() || self.memory_swap.is_some()
    }
    pub fn wants_cpu(&self) -> bool {
        self.cpu_shares.is_some() || self.cpu_quota.is_some() || self.cpu_period.is_some()
    }
    pub fn wants_cpuset(&self) -> bool {
        self.cpus.is_some() || self.mems.is_some()
    }
    pub fn wants_pids(&self) -> bool {
        self.pids_limit.is_some()
    }
}

/// A container's cgroup: created and limited by [`Manager::apply`], which also moves the
/// process in; [`Manager::oom_killed`] after the exit; [`Manager::destroy`] removes it.
pub trait Manager {
    /// Create the cgroup and write the limits, with no process in it yet. On v2 it returns an
    /// fd of the cgroup's directory for clone3's CLONE_INTO_CGROUP: the child starts inside
    /// and no process is moved (a move takes the threadgroup lock for writing, which costs an
    /// RCU grace period: 5-15 ms measured on a `run`).
    fn prepare(&mut self, res: &Resources) -> Result<Option<OwnedFd>, String>;
    /// Add `pid` to the prepared cgroup.
    fn add(&mut self, pid: i32) -> Result<(), String>;
    /// The prepared cgroup's files through which the new process joins it itself, in place of
    /// [`Manager::add`]: v1's `tasks` of each hierarchy, opened here for the child to write "0"
    /// into (see [`open_tasks`]). Empty where that does not apply (v2 clones into the cgroup).
    fn join_files(&self) -> Result<Vec<OwnedFd>, String> {
        Ok(Vec::new())
    }
    /// Create the cgroup, write the limits, and add `pid` to it.
    fn apply(&mut self, pid: i32, res: &Resources) -> Result<(), String> {
        self.prepare(res)?;
        self.add(pid)
    }
    /// Whether the OOM killer killed a process of the cgroup.
    fn oom_killed(&self) -> bool;
    /// Remove the cgroup directories (retrying briefly while they are busy).
    fn destroy(&mut self) -> Result<(), String>;
    /// The cgroup path (relative to the hierarchy roots, with a leading /).
    fn path(&self) -> &str;
    /// Freeze (`pause`) or thaw (`resume`) every process of the cgroup.
    fn freeze(&self, frozen: bool) -> Result<(), String>;
    /// Whether the cgroup is frozen.
    fn frozen(&self) -> bool;
    /// The pids of every process in the cgroup.
    fn pids(&self) -> Vec<i32>;
    /// Usage counters for `events --stats`: (memory bytes, memory limit, cpu ns, pids).
    fn stats(&self) -> Stats;
}

/// A cgroup's usage (`events --stats`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Stats {
    pub memory_usage: u64,
    pub memory_limit: u64,
    pub memory_max_usage: u64,
    pub cpu_usage_ns: u64,
    pub pids_current: u64,
    pub pids_limit: u64,
}

/// The manager of an existing cgroup (no directory is created): `pause`, `ps`, `delete`.
pub fn existing(root: &Path, path: &str) -> Result<Box<dyn Manager>, String> {
    let path = normalize(path)?;
    if is_unified(root) {
        Ok(Box::new(v2::V2Manager::existing(root, &path)))
    } else {
        Ok(Box::new(v1::V1Manager::existing(root, &path)))
    }
}

/// The pids listed in a cgroup.procs file.
pub(crate) fn read_pids(dir: &Path) -> Vec<i32> {
    read_file(dir, "cgroup.procs")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

pub(crate) fn read_u64(dir: &Path, name: &str) -> u64 {
    read_file(dir, name)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The default cgroupfs root.
pub const ROOT: &str = "/sys/fs/cgroup";

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Whether `root` is a cgroup2 mount (the unified hierarchy).
pub fn is_unified(root: &Path) -> bool {
    match rustix::fs::statfs(root) {
        // f_type is i64 on x86_64 but another width elsewhere.
        #[allow(clippy::unnecessary_cast)]
        Ok(st) => st.f_type as i64 == CGROUP2_SUPER_MAGIC,
        Err(_) => false,
    }
}

/// The manager for this host: v2 when `root` is cgroup2, else the v1 hierarchies.
pub fn manager(root: &Path, path: &str) -> Result<Box<dyn Manager>, String> {
    let path = normalize(path)?;
    if is_unified(root) {
        Ok(Box::new(v2::V2Manager::new(root, &path)))
    } else {
        Ok(Box::new(v1::V1Manager::new(root, &path)))
    }
}

/// "/a/b" from "a/b", "/a//b/"; rejects "..", "." and an empty path.
pub fn normalize(path: &str) -> Result<String, String> {
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if parts.is_empty() || parts.iter().any(|c| *c == "." || *c == "..") {
        return Err(format!("cgroup: invalid cgroups path {path:?}"));
    }
    Ok(format!("/{}", parts.join("/")))
}

pub(crate) fn errno_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

pub(crate) fn write_file(dir: &Path, name: &str, value: &str) -> Result<(), String> {
    std::fs::write(dir.join(name), value)
        .map_err(|e| format!("cgroup: write {name}={value}: {}", errno_text(&e)))
}

/// The value written to `pids.max` (both versions): a negative limit means unlimited.
pub(crate) fn pids_max(limit: i64) -> String {
    if limit < 0 {
        "max".to_string()
    } else {
        limit.to_string()
    }
}

pub(crate) fn read_file(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name)).ok()
}

/// The value of `key` in a flat-keyed file ("oom_kill 3").
pub(crate) fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        if k == key {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

/// Create `path` (absolute cgroup path) under `base` one level at a time; returns the
/// directories made, outermost first.
pub(crate) fn mkdirs(base: &Path, path: &str) -> Result<Vec<PathBuf>, String> {
    // Mostly only the leaf is new (a container's cgroup under an existing /pyrun): one mkdir.
    let mut full = base.to_path_buf();
    full.extend(path.split('/').filter(|c| !c.is_empty()));
    if full != base {
        match std::fs::create_dir(&full) {
            Ok(()) => return Ok(vec![full]),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(Vec::new()),
            Err(_) => {} // a parent is missing (or the error comes again below)
        }
    }
    let mut dir = base.to_path_buf();
    let mut made = Vec::new();
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        dir.push(comp);
        match std::fs::create_dir(&dir) {
            Ok(()) => made.push(dir.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(format!(
                    "cgroup: create {}: {}",
                    dir.display(),
                    errno_text(&e)
                ))
            }
        }
    }
    Ok(made)
}

/// rmdir, retrying for up to about a second while the cgroup still has tasks (EBUSY).
pub(crate) fn rmdir_retry(dir: &Path) -> Result<(), String> {
    let mut tries = 0;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => {
                return Err(format!(
                    "cgroup: remove {}: {}",
                    dir.display(),
                    errno_text(&e)
                ))
            }
        }
    }
}

/// runc's cpu.shares → cpu.weight conversion (opencontainers/cgroups 0.0.5 / runc 1.3.2): a
/// quadratic in log2 space through (2, 1), (1024, 100) and (262144, 10000).
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    if shares <= 2 {
        return 1;
    }
    if shares >= 262_144 {
        return 10_000;
    }
    let l = (shares as f64).log2();
    let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
    10f64.powf(exponent).ceil() as u64
}

/// The cgroup directories (under `root`) of every hierarchy `/proc/<pid>/cgroup` names: for
/// cgroup v1 `<root>/<controllers>/<path>` (`name=systemd` → `systemd`), for the unified line
/// `0::<path>` `<root>/<path>` on a pure v2 host, else `<root>/unified/<path>`. Hierarchies
/// without a mount under `root` are left out.
pub fn dirs_of_process(root: &Path, proc_cgroup: &str) -> Vec<PathBuf> {
    let unified_root = if is_unified(root) {
        root.to_path_buf()
    } else {
        root.join("unified")
    };
    let mut out = Vec::new();
    for line in proc_cgroup.lines() {
        let mut it = line.splitn(3, ':');
        let (Some(_id), Some(ctrls), Some(path)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if rel.split('/').any(|c| c == "..") {
            continue;
        }
        let base = if ctrls.is_empty() {
            unified_root.clone()
        } else {
            root.join(ctrls.strip_prefix("name=").unwrap_or(ctrls))
        };
        if base.join("cgroup.procs").exists() {
            out.push(base.join(rel));
        }
    }
    out
}

/// A v1 cgroup's `tasks`, opened for writing. A process that writes "0" into it moves only
/// its calling thread, which skips the threadgroup lock that a write to `cgroup.procs` takes
/// for writing: that lock's RCU grace period cost 5-20 ms per container here. For the
/// single-threaded child of a clone, moving its thread moves the whole process. The kernel
/// checks the opener's credentials (root here), so the child may write it from a new user
/// namespace too.
pub fn open_tasks(dir: &Path) -> Result<OwnedFd, String> {
    open(&dir.join("tasks"), rustix::fs::OFlags::WRONLY)
}

/// open(2) close-on-exec, errors as one line naming the path.
fn open(path: &Path, flags: rustix::fs::OFlags) -> Result<OwnedFd, String> {
    rustix::fs::open(
        path,
        flags | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| {
        format!(
            "cgroup: open {}: {}",
            path.display(),
            errno_text(&std::io::Error::from(e))
        )
    })
}

/// How a new process enters every cgroup a running process is in (`exec`): see
/// [`join_files_of`].
#[derive(Default)]
pub struct JoinFiles {
    /// The unified hierarchy's cgroup: its directory, and an fd of it for clone3's
    /// CLONE_INTO_CGROUP (a move would take the threadgroup lock).
    pub unified: Option<(PathBuf, OwnedFd)>,
    /// Each v1 hierarchy's `tasks`, which the child writes "0" into ([`open_tasks`]).
    pub tasks: Vec<OwnedFd>,
}

/// The files through which a new process joins every cgroup `target` (a running process) is
/// in: how `exec` enters the container's cgroups.
pub fn join_files_of(root: &Path, target: i32) -> Result<JoinFiles, String> {
    let text = std::fs::read_to_string(format!("/proc/{target}/cgroup"))
        .map_err(|e| format!("cgroup: read /proc/{target}/cgroup: {}", errno_text(&e)))?;
    let mut out = JoinFiles::default();
    for dir in dirs_of_process(root, &text) {
        if is_unified(&dir) {
            let fd = open(
                &dir,
                rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY,
            )?;
            out.unified = Some((dir, fd));
        } else {
            out.tasks.push(open_tasks(&dir)?);
        }
    }
    Ok(out)
}

/// Move `pid` into the cgroup at `dir` from outside (when clone3 could not start it there).
pub fn move_into(dir: &Path, pid: i32) -> Result<(), String> {
    std::fs::write(dir.join("cgroup.procs"), pid.to_string())
        .map_err(|e| format!("cgroup: join {}: {}", dir.display(), errno_text(&e)))
}

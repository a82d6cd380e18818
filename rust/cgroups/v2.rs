//! cgroup v2: the unified hierarchy, /sys/fs/cgroup/<path>, with the controllers enabled in
//! each parent's cgroup.subtree_control.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use super::{
    keyed_value, mkdirs, pids_max, read_file, read_pids, read_u64, rmdir_retry, shares_to_weight,
    write_file, Manager, Resources, Stats,
};

pub struct V2Manager {
    root: PathBuf,
    path: String,
    dir: PathBuf,
    created: bool,
}

impl V2Manager {
    pub fn new(root: &Path, path: &str) -> V2Manager {
        V2Manager {
            root: root.to_path_buf(),
            path: path.to_string(),
            dir: root.join(path.trim_start_matches('/')),
            created: false,
        }
    }

    /// A cgroup that exists already (removed by destroy).
    pub fn existing(root: &Path, path: &str) -> V2Manager {
        V2Manager {
            created: true,
            ..V2Manager::new(root, path)
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Enable the controllers `res` needs in every ancestor's cgroup.subtree_control.
    fn enable_controllers(&self, res: &Resources) -> Result<(), String> {
        let available = read_file(&self.root, "cgroup.controllers").unwrap_or_default();
        let available: Vec<&str> = available.split_whitespace().collect();
        let mut needed = Vec::new();
        for (ctrl, wanted) in [
            ("memory", res.wants_memory()),
            ("cpu", res.wants_cpu()),
            ("cpuset", res.wants_cpuset()),
            ("pids", res.wants_pids()),
        ] {
            if !wanted {
                continue;
            }
            if !available.contains(&ctrl) {
                return Err(format!(
                    "cgroup: the {ctrl} controller is not available (not in {}/cgroup.controllers)",
                    self.root.display()
                ));
            }
            needed.push(ctrl);
        }
        if needed.is_empty() {
            return Ok(());
        }
        let line = needed
            .iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(" ");
        let mut d = self.root.clone();
        let comps: Vec<&str> = self.path.split('/').filter(|c| !c.is_empty()).collect();
        for (i, comp) in comps.iter().enumerate() {
            let enabled = read_file(&d, "cgroup.subtree_control").unwrap_or_default();
            if !needed
                .iter()
                .all(|c| enabled.split_whitespace().any(|e| e == *c))
            {
                write_file(&d, "cgroup.subtree_control", &line)?;
            }
            if i + 1 < comps.len() {
                d.push(comp);
            }
        }
        Ok(())
    }

    fn limit(&self, res: &Resources) -> Result<(), String> {
        let d = &self.dir;
        if let Some(limit) = res.memory_limit {
            let v = if limit < 0 {
                "max".to_string()
            } else {
                limit.to_string()
            };
            write_file(d, "memory.max", &v)?;
        }
        if let Some(swap) = res.memory_swap {
            // runtime-spec's swap is memory + swap; v2's memory.swap.max is the swap alone.
            let v = match (swap, res.memory_limit) {
                (s, _) if s < 0 => "max".to_string(),
                (s, Some(m)) if m >= 0 => {
                    if s < m {
                        return Err(format!(
                            "cgroup: memory+swap limit {s} is below the memory limit {m}"
                        ));
                    }
                    (s - m).to_string()
                }
                (s, _) => s.to_string(),
            };
            if !d.join("memory.swap.max").exists() {
                return Err("cgroup: a swap limit was requested but the kernel has no swap accounting (memory.swap.max is missing)".to_string());
            }
            write_file(d, "memory.swap.max", &v)?;
        }
        if let Some(shares) = res.cpu_shares {
            write_file(d, "cpu.weight", &shares_to_weight(shares).to_string())?;
        }
        if res.cpu_quota.is_some() || res.cpu_period.is_some() {
            let quota = match res.cpu_quota {
                Some(q) if q > 0 => q.to_string(),
                _ => "max".to_string(),
            };
            let v = match res.cpu_period {
                Some(p) => format!("{quota} {p}"),
                None => quota,
            };
            write_file(d, "cpu.max", &v)?;
        }
        if let Some(cpus) = &res.cpus {
            write_file(d, "cpuset.cpus", cpus)?;
        }
        if let Some(mems) = &res.mems {
            write_file(d, "cpuset.mems", mems)?;
        }
        if let Some(limit) = res.pids_limit {
            write_file(d, "pids.max", &pids_max(limit))?;
        }
        Ok(())
    }
}

impl Manager for V2Manager {
    fn prepare(&mut self, res: &Resources) -> Result<Option<OwnedFd>, String> {
        self.enable_controllers(res)?;
        mkdirs(&self.root, &self.path)?;
        self.created = true;
        self.limit(res)?;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        rustix::fs::open(&self.dir, flags, Mode::empty())
            .map(Some)
            .map_err(|e| format!("cgroup: open {}: {e}", self.dir.display()))
    }

    fn add(&mut self, pid: i32) -> Result<(), String> {
        write_file(&self.dir, "cgroup.procs", &pid.to_string())
    }

    fn oom_killed(&self) -> bool {
        read_file(&self.dir, "memory.events")
            .and_then(|t| keyed_value(&t, "oom_kill"))
            .is_some_and(|n| n > 0)
    }

    fn destroy(&mut self) -> Result<(), String> {
        if !self.created {
            return Ok(());
        }
        self.created = false;
        rmdir_retry(&self.dir)
    }

    fn path(&self) -> &str {
        &self.path
    }

    fn freeze(&self, frozen: bool) -> Result<(), String> {
        write_file(&self.dir, "cgroup.freeze", if frozen { "1" } else { "0" })?;
        // cgroup.events says "frozen 1" once every task stopped.
        for _ in 0..500 {
            let events = read_file(&self.dir, "cgroup.events").unwrap_or_default();
            if keyed_value(&events, "frozen") == Some(frozen as u64) {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        Err(format!(
            "cgroup: {} did not become {} within a second",
            self.dir.display(),
            if frozen { "frozen" } else { "thawed" }
        ))
    }

    fn frozen(&self) -> bool {
        read_file(&self.dir, "cgroup.freeze").is_some_and(|v| v.trim() == "1")
    }

    fn pids(&self) -> Vec<i32> {
        read_pids(&self.dir)
    }

    fn stats(&self) -> Stats {
        let cpu = read_file(&self.dir, "cpu.stat")
            .and_then(|t| keyed_value(&t, "usage_usec"))
            .unwrap_or(0);
        let max = |name: &str| {
            read_file(&self.dir, name)
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(u64::MAX)
        };
        Stats {
            memory_usage: read_u64(&self.dir, "memory.current"),
            memory_limit: max("memory.max"),
            memory_max_usage: read_u64(&self.dir, "memory.peak"),
            cpu_usage_ns: cpu * 1000,
            pids_current: read_u64(&self.dir, "pids.current"),
            pids_limit: max("pids.max"),
        }
    }
}

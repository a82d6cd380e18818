//! cgroup v2: the unified hierarchy, /sys/fs/cgroup/<path>, with the controllers enabled in
//! each parent's cgroup.subtree_control.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use super::{
    keyed_value, mkdirs, pids_max, read_file, rmdir_retry, shares_to_weight, write_file, Manager,
    Resources,
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
}

//! cgroup v1: one hierarchy per controller, /sys/fs/cgroup/<controller>/<path>.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use super::{
    keyed_value, mkdirs, pids_max, read_file, rmdir_retry, write_file, Manager, Resources,
};

/// The controllers a container joins (when their hierarchy is mounted).
pub const CONTROLLERS: [&str; 4] = ["memory", "cpu", "cpuset", "pids"];

pub struct V1Manager {
    root: PathBuf,
    path: String,
    /// (controller, the container's directory in it) for each one joined.
    dirs: Vec<(&'static str, PathBuf)>,
}

impl V1Manager {
    pub fn new(root: &Path, path: &str) -> V1Manager {
        V1Manager {
            root: root.to_path_buf(),
            path: path.to_string(),
            dirs: Vec::new(),
        }
    }

    pub fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| *c == controller)
            .map(|(_, d)| d.as_path())
    }

    fn create(&mut self, res: &Resources) -> Result<(), String> {
        for ctrl in CONTROLLERS {
            let base = self.root.join(ctrl);
            let wanted = match ctrl {
                "memory" => res.wants_memory(),
                "cpu" => res.wants_cpu(),
                "cpuset" => res.wants_cpuset(),
                _ => res.wants_pids(),
            };
            if !base.join("cgroup.procs").exists() {
                if wanted {
                    return Err(format!(
                        "cgroup: the {ctrl} controller is not mounted at {}",
                        base.display()
                    ));
                }
                continue;
            }
            mkdirs(&base, &self.path)?;
            let dir = base.join(self.path.trim_start_matches('/'));
            self.dirs.push((ctrl, dir));
            if ctrl == "cpuset" {
                // A new cpuset has empty cpus and mems, and no task may join it until both are
                // set: copy them from the parent, level by level.
                let mut d = base.clone();
                for comp in self.path.split('/').filter(|c| !c.is_empty()) {
                    let parent = d.clone();
                    d.push(comp);
                    for f in ["cpuset.cpus", "cpuset.mems"] {
                        if read_file(&d, f).is_some_and(|v| v.trim().is_empty()) {
                            let v = read_file(&parent, f).unwrap_or_default();
                            write_file(&d, f, v.trim())?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn limit(&self, res: &Resources) -> Result<(), String> {
        if let Some(d) = self.dir("memory") {
            if let Some(limit) = res.memory_limit {
                write_file(d, "memory.limit_in_bytes", &limit.to_string())?;
            }
            if let Some(swap) = res.memory_swap {
                if !d.join("memory.memsw.limit_in_bytes").exists() {
                    return Err("cgroup: a swap limit was requested but the kernel has no swap accounting (memory.memsw.limit_in_bytes is missing)".to_string());
                }
                write_file(d, "memory.memsw.limit_in_bytes", &swap.to_string())?;
            }
        }
        if let Some(d) = self.dir("cpu") {
            if let Some(shares) = res.cpu_shares {
                write_file(d, "cpu.shares", &shares.to_string())?;
            }
            if let Some(period) = res.cpu_period {
                write_file(d, "cpu.cfs_period_us", &period.to_string())?;
            }
            if let Some(quota) = res.cpu_quota {
                write_file(d, "cpu.cfs_quota_us", &quota.to_string())?;
            }
        }
        if let Some(d) = self.dir("cpuset") {
            if let Some(cpus) = &res.cpus {
                write_file(d, "cpuset.cpus", cpus)?;
            }
            if let Some(mems) = &res.mems {
                write_file(d, "cpuset.mems", mems)?;
            }
        }
        if let Some(d) = self.dir("pids") {
            if let Some(limit) = res.pids_limit {
                write_file(d, "pids.max", &pids_max(limit))?;
            }
        }
        Ok(())
    }
}

impl Manager for V1Manager {
    fn prepare(&mut self, res: &Resources) -> Result<Option<OwnedFd>, String> {
        self.create(res)?;
        self.limit(res)?;
        Ok(None) // clone3 puts a child into one v2 cgroup only
    }

    fn add(&mut self, pid: i32) -> Result<(), String> {
        for (_, d) in &self.dirs {
            write_file(d, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    fn oom_killed(&self) -> bool {
        let Some(d) = self.dir("memory") else {
            return false;
        };
        let control = read_file(d, "memory.oom_control").unwrap_or_default();
        if let Some(n) = keyed_value(&control, "oom_kill") {
            return n > 0;
        }
        // Kernels before 4.13 have no oom_kill counter: the limit was hit and the cgroup is or
        // was under OOM.
        let under = keyed_value(&control, "under_oom").unwrap_or(0) > 0;
        let failcnt = read_file(d, "memory.failcnt")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        under || failcnt > 0
    }

    fn destroy(&mut self) -> Result<(), String> {
        let mut first = Ok(());
        for (_, d) in self.dirs.drain(..) {
            if let Err(e) = rmdir_retry(&d) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    fn path(&self) -> &str {
        &self.path
    }
}

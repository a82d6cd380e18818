//! cgroup v1: one hierarchy per controller, /sys/fs/cgroup/<controller>/<path>.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use super::{
    keyed_value, mkdirs, pids_max, read_file, read_pids, read_u64, rmdir_retry, write_file,
    Manager, Resources, Stats,
};

/// The controllers a container joins (when their hierarchy is mounted): the limits', the
/// freezer (`pause`), cpuacct (`events --stats`) and devices (`linux.resources.devices`).
pub const CONTROLLERS: [&str; 7] = [
    "memory", "cpu", "cpuset", "pids", "freezer", "cpuacct", "devices",
];

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

    /// A cgroup that exists already: every mounted hierarchy that has its directory.
    pub fn existing(root: &Path, path: &str) -> V1Manager {
        let mut m = V1Manager::new(root, path);
        for ctrl in CONTROLLERS {
            let dir = root.join(ctrl).join(path.trim_start_matches('/'));
            if dir.join("cgroup.procs").exists() && !m.dirs.iter().any(|(_, d)| *d == dir) {
                m.dirs.push((ctrl, dir));
            }
        }
        m
    }

    pub fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| *c == controller)
            .map(|(_, d)| d.as_path())
    }

    fn create(&mut self, res: &Resources) -> Result<(), String> {
        // The hierarchies joined so far, by their root's cgroup.procs (device, inode): cpu and
        // cpuacct are often one hierarchy ("cpu,cpuacct" with two links to it).
        let mut joined: Vec<(u64, u64)> = Vec::new();
        for ctrl in CONTROLLERS {
            let base = self.root.join(ctrl);
            let wanted = match ctrl {
                "memory" => res.wants_memory(),
                "cpu" => res.wants_cpu(),
                "cpuset" => res.wants_cpuset(),
                "pids" => res.wants_pids(),
                "devices" => !res.device_rules.is_empty(),
                _ => false,
            };
            let Ok(procs) = rustix::fs::stat(base.join("cgroup.procs")) else {
                if wanted {
                    return Err(format!(
                        "cgroup: the {ctrl} controller is not mounted at {}",
                        base.display()
                    ));
                }
                continue;
            };
            if ctrl == "devices" && !wanted {
                continue;
            }
            #[allow(clippy::unnecessary_cast)] // st_dev/st_ino widths differ between targets
            let identity = (procs.st_dev as u64, procs.st_ino as u64);
            if joined.contains(&identity) {
                continue;
            }
            joined.push(identity);
            let dir = base.join(self.path.trim_start_matches('/'));
            mkdirs(&base, &self.path)?;
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
        if let Some(d) = self.dir("devices") {
            for (allow, rule) in &res.device_rules {
                let file = if *allow {
                    "devices.allow"
                } else {
                    "devices.deny"
                };
                write_file(d, file, rule)?;
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

    fn join_files(&self) -> Result<Vec<OwnedFd>, String> {
        self.dirs
            .iter()
            .map(|(_, d)| super::open_tasks(d))
            .collect()
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

    fn freeze(&self, frozen: bool) -> Result<(), String> {
        let d = self
            .dir("freezer")
            .ok_or_else(|| "cgroup: the freezer controller is not mounted".to_string())?;
        let want = if frozen { "FROZEN" } else { "THAWED" };
        for _ in 0..500 {
            write_file(d, "freezer.state", want)?;
            if read_file(d, "freezer.state").is_some_and(|v| v.trim() == want) {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        Err(format!(
            "cgroup: {} did not become {want} within a second",
            d.display()
        ))
    }

    fn frozen(&self) -> bool {
        self.dir("freezer")
            .and_then(|d| read_file(d, "freezer.state"))
            .is_some_and(|v| v.trim() == "FROZEN")
    }

    fn pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for ctrl in ["pids", "memory", "freezer", "cpu"] {
            if let Some(d) = self.dir(ctrl) {
                pids = read_pids(d);
                break;
            }
        }
        pids
    }

    fn stats(&self) -> Stats {
        let mut st = Stats::default();
        if let Some(d) = self.dir("memory") {
            st.memory_usage = read_u64(d, "memory.usage_in_bytes");
            st.memory_limit = read_u64(d, "memory.limit_in_bytes");
            st.memory_max_usage = read_u64(d, "memory.max_usage_in_bytes");
        }
        if let Some(d) = self.dir("cpuacct").or(self.dir("cpu")) {
            st.cpu_usage_ns = read_u64(d, "cpuacct.usage");
        }
        if let Some(d) = self.dir("pids") {
            st.pids_current = read_u64(d, "pids.current");
            st.pids_limit = read_file(d, "pids.max")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(u64::MAX);
        }
        st
    }
}

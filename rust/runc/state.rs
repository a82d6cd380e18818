//! The runc CLI's container records: `<root>/<id>/state.json` (written atomically), the
//! saved `config.json` (what `exec` and `delete` use, whatever happens to the bundle later)
//! and `exec.fifo` (present while the container is created and not yet started).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Fail;
use crate::runtime::spec::Hooks;

/// What `create` records about a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    pub id: String,
    /// The container's init process, with its start time (a pid alone may be reused).
    pub pid: i32,
    pub pid_start: u64,
    pub bundle: String,
    pub rootfs: String,
    pub created: String,
    pub owner: String,
    pub oci_version: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub hooks: Hooks,
    /// The cgroup path (cgroupfs), when the container has one.
    #[serde(default)]
    pub cgroup: Option<String>,
    /// The namespace types the container has (their files under /proc/PID/ns are joined by
    /// `exec`).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// The systemd unit made for it (`--systemd-cgroup` where systemd runs).
    #[serde(default)]
    pub systemd_unit: Option<String>,
}

/// The runtime-spec statuses (and runc's "paused").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// A container directory of the state root.
pub struct Container {
    pub dir: PathBuf,
    pub saved: Saved,
}

/// runc's rule for container IDs.
pub fn check_id(id: &str) -> Result<(), Fail> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Fail::msg(format!("invalid container id format: {id}")))
    }
}

pub fn container_dir(root: &Path, id: &str) -> PathBuf {
    root.join(id)
}

/// Whether `pid` is the process that started at `start` and has not exited (a zombie has).
pub fn alive(pid: i32, start: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return false;
    };
    let mut fields = after.split(' ');
    let state = fields.next().unwrap_or("");
    let started: Option<u64> = fields.nth(18).and_then(|v| v.parse().ok());
    state != "Z" && state != "X" && started == Some(start)
}

impl Container {
    pub fn load(root: &Path, id: &str) -> Result<Container, Fail> {
        check_id(id)?;
        let dir = container_dir(root, id);
        let bytes = match std::fs::read(dir.join("state.json")) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Fail::msg("container does not exist"))
            }
            Err(e) => {
                return Err(Fail::msg(format!(
                    "read {}: {}",
                    dir.join("state.json").display(),
                    crate::runtime::strerror(&e)
                )))
            }
        };
        let saved: Saved = serde_json::from_slice(&bytes).map_err(|e| {
            Fail::msg(format!(
                "{}: corrupt state: {e}",
                dir.join("state.json").display()
            ))
        })?;
        Ok(Container { dir, saved })
    }

    pub fn fifo(&self) -> PathBuf {
        self.dir.join("exec.fifo")
    }

    pub fn is_alive(&self) -> bool {
        self.saved.pid > 0 && alive(self.saved.pid, self.saved.pid_start)
    }

    pub fn status(&self) -> Status {
        if !self.is_alive() {
            return Status::Stopped;
        }
        if self.fifo().exists() {
            return Status::Created;
        }
        if let Some(cg) = &self.saved.cgroup {
            if let Ok(m) = crate::cgroups::existing(Path::new(crate::cgroups::ROOT), cg) {
                if m.frozen() {
                    return Status::Paused;
                }
            }
        }
        Status::Running
    }

    /// The runtime-spec state (runc's fields included).
    pub fn state_json(&self, status: Status) -> serde_json::Value {
        let pid = if status == Status::Stopped {
            0
        } else {
            self.saved.pid
        };
        state_value(&self.saved, status.as_str(), pid)
    }
}

/// The state object given to `state` callers and to hooks on stdin.
pub fn state_value(s: &Saved, status: &str, pid: i32) -> serde_json::Value {
    let mut v = serde_json::json!({
        "ociVersion": s.oci_version,
        "id": s.id,
        "pid": pid,
        "status": status,
        "bundle": s.bundle,
        "rootfs": s.rootfs,
        "created": s.created,
        "owner": s.owner,
    });
    if !s.annotations.is_empty() {
        v["annotations"] = serde_json::to_value(&s.annotations).unwrap_or_default();
    }
    v
}

/// Write `bytes` to `path` atomically (a temporary file beside it, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

pub fn save(dir: &Path, saved: &Saved) -> Result<(), Fail> {
    let bytes = serde_json::to_vec(saved).unwrap_or_default();
    write_atomic(&dir.join("state.json"), &bytes).map_err(|e| {
        Fail::msg(format!(
            "write {}: {}",
            dir.join("state.json").display(),
            crate::runtime::strerror(&e)
        ))
    })
}

/// Every container ID under the root, sorted.
pub fn ids(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = match std::fs::read_dir(root) {
        Ok(rd) => rd
            .flatten()
            .filter(|e| e.path().join("state.json").exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

/// The user name of a uid (from /etc/passwd), else the number, as runc's `owner`.
pub fn owner_name(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() > 2 && f[2] == uid.to_string() {
            return f[0].to_string();
        }
    }
    uid.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(check_id("abc-1.2_x+y").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "ä"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn own_process_is_alive() {
        let me = std::process::id() as i32;
        let start = crate::monitor::start_time(me).unwrap();
        assert!(alive(me, start));
        assert!(!alive(me, start + 1));
        assert!(!alive(i32::MAX, start));
    }
}

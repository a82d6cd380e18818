//! Turn a parsed spec into a [`Plan`]: everything the child needs between clone and exec,
//! allocated and validated up front (C strings, argv/envp pointer arrays, mount steps,
//! capability masks, namespace fds), so that the child only makes system calls on it.

use std::ffi::{c_char, CString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::process::Resource;

use super::caps;
use super::seccomp;
use super::spec::{self, Spec};
use super::sys::{
    MOUNT_ATTR_ATIME_MASK, MOUNT_ATTR_NOATIME, MOUNT_ATTR_NODEV, MOUNT_ATTR_NODIRATIME,
    MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NOSYMFOLLOW, MOUNT_ATTR_RDONLY,
    MOUNT_ATTR_STRICTATIME,
};
use super::Error;

pub const CLONE_NEWNS: u64 = 0x0002_0000;
pub const CLONE_NEWCGROUP: u64 = 0x0200_0000;
pub const CLONE_NEWUTS: u64 = 0x0400_0000;
pub const CLONE_NEWIPC: u64 = 0x0800_0000;
pub const CLONE_NEWUSER: u64 = 0x1000_0000;
pub const CLONE_NEWPID: u64 = 0x2000_0000;
pub const CLONE_NEWNET: u64 = 0x4000_0000;
pub const CLONE_NEWTIME: u64 = 0x0000_0080;

pub const MS_PRIVATE: u32 = libc::MS_PRIVATE as u32;
pub const MS_SLAVE: u32 = libc::MS_SLAVE as u32;
pub const MS_SHARED: u32 = libc::MS_SHARED as u32;
pub const MS_UNBINDABLE: u32 = libc::MS_UNBINDABLE as u32;
pub const MS_REC: u32 = libc::MS_REC as u32;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A path inside the container, relative to its root, with what is needed to create it one
/// component at a time: `parents[i]` = (directory holding component i, component i).
#[derive(Debug)]
pub struct PathPlan {
    pub display: String,
    pub rel: CString,
    pub parents: Vec<(CString, CString)>,
}

#[derive(Debug)]
pub enum FsParam {
    Flag(CString),
    Str(CString, CString),
}

#[derive(Debug)]
pub enum MountKind {
    Bind {
        source: CString,
        recursive: bool,
        is_dir: bool,
    },
    Fs {
        fstype: CString,
        source: Option<CString>,
        params: Vec<FsParam>,
    },
}

#[derive(Debug)]
pub struct MountPlan {
    pub target: PathPlan,
    /// The type as written in the spec, for messages ("bind" for bind mounts).
    pub type_display: String,
    pub kind: MountKind,
    /// MOUNT_ATTR_* to set and to clear.
    pub attr_set: u64,
    pub attr_clr: u64,
    /// Apply the attributes to every mount of an rbind tree ("rro" and friends, or rbind).
    pub attr_recursive: bool,
    /// MS_PRIVATE / MS_SLAVE / MS_SHARED / MS_UNBINDABLE, or 0.
    pub propagation: u64,
    pub propagation_recursive: bool,
    /// /proc, /sys and /dev (and any proc or sysfs mount) may not be symlinks in the image.
    pub refuse_symlink: bool,
}

#[derive(Debug)]
pub struct Sysctl {
    pub key: String,
    pub path: CString,
    pub value: Vec<u8>,
}

#[derive(Debug)]
pub struct RlimitPlan {
    pub name: String,
    pub resource: Resource,
    pub soft: u64,
    pub hard: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct CapPlan {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

pub struct JoinNs {
    pub kind: &'static str,
    pub path: String,
    pub fd: OwnedFd,
}

pub struct ExecPlan {
    pub name: String,
    pub has_slash: bool,
    /// The PATH searched (from process.env, else the default), without a terminating NUL.
    pub search_path: Vec<u8>,
    pub argv_c: Vec<CString>,
    pub envp_c: Vec<CString>,
    /// Null-terminated pointer arrays into `argv_c` / `envp_c` (which are never moved again).
    pub argv: Vec<*const c_char>,
    pub envp: Vec<*const c_char>,
}

pub struct Plan {
    pub rootfs: CString,
    pub rootfs_display: String,
    pub root_readonly: bool,
    pub clone_flags: u64,
    /// Namespaces created with unshare after joining a user namespace by path.
    pub unshare_flags: u64,
    /// Namespaces joined by the child with setns, the user namespace first.
    pub join: Vec<JoinNs>,
    /// A pid namespace to join: the parent's thread enters it around clone.
    pub join_pid: Option<JoinNs>,
    pub new_userns: bool,
    pub uid_map: String,
    pub gid_map: String,
    pub setgroups_allowed: bool,
    pub new_netns: bool,
    pub propagation_start: u32,
    pub propagation_after: u32,
    pub mounts: Vec<MountPlan>,
    pub dev_tmpfs: bool,
    pub sysctls: Vec<Sysctl>,
    pub readonly_paths: Vec<PathPlan>,
    pub masked_paths: Vec<PathPlan>,
    pub hostname: Option<Vec<u8>>,
    pub oom_score_adj: Option<Vec<u8>>,
    pub rlimits: Vec<RlimitPlan>,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<rustix::process::Gid>,
    pub umask: u32,
    pub caps: Option<CapPlan>,
    pub last_cap: u32,
    pub no_new_privs: bool,
    /// The compiled `linux.seccomp` filter, installed last before exec (or before the
    /// credentials change when no_new_privs is off: it needs CAP_SYS_ADMIN then).
    pub seccomp: Option<seccomp::Filter>,
    pub cwd: PathPlan,
    pub exec: ExecPlan,
    /// Where the container's stdout and stderr go instead of the caller's fds 1 and 2
    /// (close-on-exec duplicates taken by the parent).
    pub stdio: Option<(OwnedFd, OwnedFd)>,
    /// Set by the runtime for the duration of the start: pipes to a log copier, used by the
    /// child instead of `stdio`.
    pub stdio_override: Option<(OwnedFd, OwnedFd)>,
    /// The container's stdin instead of the caller's fd 0 (a detached `-i`: a pipe from the
    /// monitor).
    pub stdin: Option<OwnedFd>,
    /// The container's cgroup (path and limits) when config.json has `linux.resources` or
    /// `linux.cgroupsPath`; created by the parent before the child is released.
    pub cgroup: Option<CgroupPlan>,
    /// `exec`: the pid of the container's init, whose namespaces (all joined by path) and
    /// cgroups the process enters; no root, mounts, hostname or cgroup of its own are set up.
    pub exec_into: Option<i32>,
    /// Annotation `io.pyrun.init` = "true" (`--init`): pid 1 stays a reaper that forwards
    /// signals, and the command runs as its child.
    pub init: bool,
    /// process.terminal: the process gets a pty of the container's devpts as stdio.
    pub terminal: bool,
    /// The pty's first window size (rows, columns), set by the child before exec so even a
    /// command that asks at once sees it; the runtime's caller fills it in.
    pub console_size: Option<(u16, u16)>,
    /// `linux.devices`: nodes created in the container after its mounts.
    pub devices: Vec<DevicePlan>,
    /// The container outlives the caller (`pyrun-runtime create`/`exec --detach`): no
    /// parent-death signal.
    pub detached: bool,
    /// `pyrun-runtime create`: the exec fifo (opened read-write by the caller). The child sets
    /// everything up, checks that the executable exists, closes its error pipe (the caller's
    /// "created") and then blocks reading one byte from it until `start` writes it.
    pub gate: Option<OwnedFd>,
    /// Fds 3..3+N stay open in the container (`--preserve-fds`).
    pub preserve_fds: u32,
    /// `--no-pivot`: move the root onto / and chroot instead of pivot_root (for a root on a
    /// filesystem pivot_root refuses, such as an initramfs).
    pub no_pivot: bool,
    /// Called by [`super::start_plan`] with the child's pid once its namespaces and cgroup
    /// exist, before it is released (the runc CLI's prestart/createRuntime hooks); an error
    /// fails the start.
    pub on_created: Option<OnCreated>,
}

pub type OnCreated = Box<dyn Fn(i32) -> Result<(), String> + Send + Sync>;

/// One `linux.devices` entry: `dir`/`name` in the container, made with mknod (or, where
/// mknod is not allowed, a bind of the host's node at the same path).
pub struct DevicePlan {
    pub display: String,
    pub dir: PathPlan,
    pub name: CString,
    pub kind: rustix::fs::FileType,
    pub rdev: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub host: CString,
}

pub struct CgroupPlan {
    pub path: String,
    pub resources: crate::cgroups::Resources,
}

/// The cgroup plan: `linux.cgroupsPath`, by default "/pyrun/<container id>" (the
/// io.pyrun.container.id annotation, else the bundle directory's name).
fn cgroup_plan(
    spec: &Spec,
    linux: &spec::Linux,
    bundle: &Path,
) -> Result<Option<CgroupPlan>, Error> {
    if linux.resources.is_none() && linux.cgroups_path.is_none() {
        return Ok(None);
    }
    let path = match linux.cgroups_path.as_deref() {
        Some(p) if !p.is_empty() => p.to_string(),
        _ => {
            let id = match spec.annotations.get("io.pyrun.container.id") {
                Some(id) if !id.is_empty() => id.clone(),
                _ => bundle
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "container".to_string()),
            };
            format!("/pyrun/{id}")
        }
    };
    let path = crate::cgroups::normalize(&path).map_err(|_| {
        value(format!(
            "config.json: linux.cgroupsPath: invalid path {path:?}"
        ))
    })?;
    let res = match &linux.resources {
        Some(r) => resources(r)?,
        None => crate::cgroups::Resources::default(),
    };
    Ok(Some(CgroupPlan {
        path,
        resources: res,
    }))
}

/// `linux.resources` in the cgroup managers' terms.
pub fn resources(r: &spec::Resources) -> Result<crate::cgroups::Resources, Error> {
    let mut res = crate::cgroups::Resources::default();
    {
        if let Some(m) = &r.memory {
            res.memory_limit = m.limit;
            res.memory_swap = m.swap;
        }
        if let Some(c) = &r.cpu {
            res.cpu_shares = c.shares;
            res.cpu_quota = c.quota;
            res.cpu_period = c.period;
            res.cpus = c.cpus.clone().filter(|v| !v.is_empty());
            res.mems = c.mems.clone().filter(|v| !v.is_empty());
        }
        if let Some(p) = &r.pids {
            res.pids_limit = Some(p.limit);
        }
        res.device_rules = device_rules(&r.devices)?;
    }
    Ok(res)
}

/// `linux.resources.devices` as v1 rules: (allow, "c 1:3 rwm").
pub fn device_rules(rules: &[spec::DeviceRule]) -> Result<Vec<(bool, String)>, Error> {
    let mut out = Vec::with_capacity(rules.len());
    for (i, r) in rules.iter().enumerate() {
        let kind = r.kind.as_deref().unwrap_or("a");
        if !matches!(kind, "a" | "c" | "b") {
            return Err(value(format!(
                "config.json: linux.resources.devices[{i}].type: {kind:?} is not a, b or c"
            )));
        }
        let num = |n: Option<i64>| match n {
            Some(n) if n >= 0 => n.to_string(),
            _ => "*".to_string(),
        };
        let access = r.access.as_deref().unwrap_or("rwm");
        if access.is_empty() || !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(value(format!(
                "config.json: linux.resources.devices[{i}].access: {access:?} is not made of r, w and m"
            )));
        }
        let rule = if kind == "a" {
            "a *:* rwm".to_string()
        } else {
            format!("{kind} {}:{} {access}", num(r.major), num(r.minor))
        };
        out.push((r.allow, rule));
    }
    Ok(out)
}

/// The device cgroup rules runc always adds after the spec's (when it has any): mknod of
/// anything, the standard nodes, ptys, /dev/net/tun, and each `linux.devices` node.
fn with_default_devices(rules: &mut Vec<(bool, String)>, devices: &[spec::Device]) {
    if rules.is_empty() {
        return;
    }
    for r in [
        "c *:* m",
        "b *:* m",
        "c 1:3 rwm",
        "c 1:8 rwm",
        "c 1:7 rwm",
        "c 5:0 rwm",
        "c 1:5 rwm",
        "c 1:9 rwm",
        "c 5:1 rwm",
        "c 136:* rwm",
        "c 5:2 rwm",
        "c 10:200 rwm",
    ] {
        rules.push((true, r.to_string()));
    }
    for d in devices {
        let kind = match d.kind.as_str() {
            "b" => "b",
            "p" => continue,
            _ => "c",
        };
        rules.push((true, format!("{kind} {}:{} rwm", d.major, d.minor)));
    }
}

fn device_plan(i: usize, d: &spec::Device) -> Result<DevicePlan, Error> {
    use rustix::fs::FileType;
    let field = format!("linux.devices[{i}]");
    let target = path_plan(&format!("{field}.path"), &d.path)?;
    let Some((dir, name)) = target.parents.last() else {
        return Err(value(format!("config.json: {field}.path: cannot be /")));
    };
    let kind = match d.kind.as_str() {
        "c" | "u" => FileType::CharacterDevice,
        "b" => FileType::BlockDevice,
        "p" => FileType::Fifo,
        other => {
            return Err(value(format!(
                "config.json: {field}.type: {other:?} is not c, u, b or p"
            )))
        }
    };
    if kind != FileType::Fifo && (d.major < 0 || d.minor < 0) {
        return Err(value(format!(
            "config.json: {field}: a device needs its major and minor numbers"
        )));
    }
    let dir_path = match dir.to_bytes() {
        b"." => "/".to_string(),
        other => format!("/{}", String::from_utf8_lossy(other)),
    };
    Ok(DevicePlan {
        display: d.path.clone(),
        dir: path_plan(&format!("{field}.path"), &dir_path)?,
        name: name.clone(),
        kind,
        rdev: rustix::fs::makedev(d.major as u32, d.minor as u32),
        mode: d.file_mode.unwrap_or(0o666) & 0o7777,
        uid: d.uid.unwrap_or(0),
        gid: d.gid.unwrap_or(0),
        host: cstring(&format!("{field}.path"), d.path.as_bytes())?,
    })
}

fn value(msg: impl Into<String>) -> Error {
    Error::Value(msg.into())
}

fn cstring(field: &str, s: &[u8]) -> Result<CString, Error> {
    CString::new(s).map_err(|_| value(format!("config.json: {field}: contains a NUL byte")))
}

/// Normalise an absolute container path lexically ("/a/./b/../c" -> "a/c") and split it.
pub fn path_plan(field: &str, path: &str) -> Result<PathPlan, Error> {
    if !path.starts_with('/') {
        return Err(value(format!(
            "config.json: {field}: {path:?} is not an absolute path"
        )));
    }
    let mut comps: Vec<&[u8]> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => comps.push(n.as_bytes()),
            Component::ParentDir => {
                comps.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    let rel = if comps.is_empty() {
        b".".to_vec()
    } else {
        comps.join(&b'/')
    };
    let mut parents = Vec::with_capacity(comps.len());
    for i in 0..comps.len() {
        let parent = if i == 0 {
            b".".to_vec()
        } else {
            comps[..i].join(&b'/')
        };
        parents.push((cstring(field, &parent)?, cstring(field, comps[i])?));
    }
    Ok(PathPlan {
        display: path.to_string(),
        rel: cstring(field, &rel)?,
        parents,
    })
}

/// The parsed mount options of one spec mount.
#[derive(Default)]
struct Options {
    bind: bool,
    rbind: bool,
    set: u64,
    clr: u64,
    recursive_attr: bool,
    propagation: u64,
    propagation_recursive: bool,
    params: Vec<(String, Option<String>)>,
}

fn parse_options(opts: &[String]) -> Options {
    let mut o = Options::default();
    for opt in opts {
        let (name, recursive) = match opt.strip_prefix('r') {
            // "rro", "rnosuid", ...: recursive variants (runc's and crun's spelling).
            Some(rest) if attr_of(rest).is_some() && !matches!(opt.as_str(), "rw" | "ro") => {
                (rest, true)
            }
            _ => (opt.as_str(), false),
        };
        if let Some((set, clr)) = attr_of(name) {
            o.set = (o.set & !clr) | set;
            o.clr = (o.clr & !set) | clr;
            o.recursive_attr |= recursive;
            continue;
        }
        match opt.as_str() {
            "bind" => o.bind = true,
            "rbind" => {
                o.bind = true;
                o.rbind = true;
            }
            "private" | "rprivate" | "slave" | "rslave" | "shared" | "rshared" | "unbindable"
            | "runbindable" => {
                o.propagation_recursive = opt.starts_with('r');
                o.propagation = propagation_flag(opt.trim_start_matches('r')) as u64;
            }
            // Meaningless for a new mount, or the default.
            "defaults" | "remount" | "silent" | "loud" | "async" | "mand" | "nomand"
            | "iversion" | "noiversion" | "norelatime" | "nostrictatime" => {}
            _ => match opt.split_once('=') {
                Some((k, v)) => o.params.push((k.to_string(), Some(v.to_string()))),
                None => o.params.push((opt.clone(), None)),
            },
        }
    }
    o
}

/// MOUNT_ATTR bits (set, clear) of a mount flag option.
fn attr_of(opt: &str) -> Option<(u64, u64)> {
    Some(match opt {
        "ro" => (MOUNT_ATTR_RDONLY, 0),
        "rw" => (0, MOUNT_ATTR_RDONLY),
        "nosuid" => (MOUNT_ATTR_NOSUID, 0),
        "suid" => (0, MOUNT_ATTR_NOSUID),
        "nodev" => (MOUNT_ATTR_NODEV, 0),
        "dev" => (0, MOUNT_ATTR_NODEV),
        "noexec" => (MOUNT_ATTR_NOEXEC, 0),
        "exec" => (0, MOUNT_ATTR_NOEXEC),
        "nosymfollow" => (MOUNT_ATTR_NOSYMFOLLOW, 0),
        "symfollow" => (0, MOUNT_ATTR_NOSYMFOLLOW),
        "noatime" => (MOUNT_ATTR_NOATIME, MOUNT_ATTR_ATIME_MASK),
        "strictatime" => (MOUNT_ATTR_STRICTATIME, MOUNT_ATTR_ATIME_MASK),
        "relatime" | "atime" => (0, MOUNT_ATTR_ATIME_MASK),
        "nodiratime" => (MOUNT_ATTR_NODIRATIME, 0),
        "diratime" => (0, MOUNT_ATTR_NODIRATIME),
        _ => return None,
    })
}

fn propagation_flag(name: &str) -> u32 {
    match name {
        "private" => MS_PRIVATE,
        "slave" => MS_SLAVE,
        "shared" => MS_SHARED,
        _ => MS_UNBINDABLE,
    }
}

fn mount_plan(i: usize, m: &spec::Mount, bundle: &Path) -> Result<MountPlan, Error> {
    let field = format!("mounts[{i}]");
    let target = path_plan(&format!("{field}.destination"), &m.destination)?;
    if target.parents.is_empty() {
        return Err(value(format!(
            "config.json: {field}.destination: cannot mount over the container's root"
        )));
    }
    let o = parse_options(&m.options);
    let fstype = m.kind.as_deref().unwrap_or("");
    let is_bind = o.bind || fstype == "bind";
    let rel = target.rel.to_bytes();
    let refuse_symlink =
        matches!(rel, b"proc" | b"sys" | b"dev") || matches!(fstype, "proc" | "sysfs");
    let kind = if is_bind {
        let src = m.source.as_deref().unwrap_or("");
        if src.is_empty() {
            return Err(value(format!(
                "config.json: {field}.source: a bind mount needs a source"
            )));
        }
        let path = bundle.join(src);
        let meta = std::fs::metadata(&path).map_err(|e| Error::Start {
            msg: format!(
                "mount {}: bind source {}: {}",
                m.destination,
                path.display(),
                super::strerror(&e)
            ),
            code: 125,
        })?;
        MountKind::Bind {
            source: cstring(&format!("{field}.source"), path.as_os_str().as_bytes())?,
            recursive: o.rbind,
            is_dir: meta.is_dir(),
        }
    } else {
        if fstype.is_empty() {
            return Err(value(format!(
                "config.json: {field}.type: required unless the options contain bind or rbind"
            )));
        }
        // "cgroup" is the unified hierarchy (expanded into the v1 ones by cgroup_mounts on a
        // v1 host); "cgroup-v1" is one v1 hierarchy, its controllers in the options.
        let real_type = match fstype {
            "cgroup" => "cgroup2",
            "cgroup-v1" => "cgroup",
            other => other,
        };
        let mut params = Vec::with_capacity(o.params.len());
        for (k, v) in &o.params {
            let kc = cstring(&format!("{field}.options"), k.as_bytes())?;
            params.push(match v {
                Some(v) => FsParam::Str(kc, cstring(&format!("{field}.options"), v.as_bytes())?),
                None => FsParam::Flag(kc),
            });
        }
        let source = match m.source.as_deref() {
            Some(s) if !s.is_empty() => Some(cstring(&format!("{field}.source"), s.as_bytes())?),
            _ => None,
        };
        MountKind::Fs {
            fstype: cstring(&format!("{field}.type"), real_type.as_bytes())?,
            source,
            params,
        }
    };
    Ok(MountPlan {
        target,
        type_display: if is_bind {
            "bind".to_string()
        } else {
            fstype.trim_end_matches("-v1").to_string()
        },
        kind,
        attr_set: o.set,
        attr_clr: o.clr,
        attr_recursive: o.recursive_attr || o.rbind,
        propagation: o.propagation,
        propagation_recursive: o.propagation_recursive,
        refuse_symlink,
    })
}

/// The v1 hierarchies mounted under /sys/fs/cgroup on this host (their directory names:
/// "memory", "cpu,cpuacct", "systemd").
fn host_v1_hierarchies() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut names = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = left.split(' ').nth(4).unwrap_or("");
        let fstype = right.split(' ').next().unwrap_or("");
        let Some(name) = mount_point.strip_prefix("/sys/fs/cgroup/") else {
            continue;
        };
        if !name.is_empty() && !name.contains('/') && fstype == "cgroup" {
            names.push(name.to_string());
        }
    }
    names.sort();
    names.dedup();
    names
}

/// A `cgroup` mount: on a unified (v2) host the cgroup2 filesystem; on a v1 host a tmpfs with
/// each v1 hierarchy of the host mounted in it, as runc does. In the container's cgroup
/// namespace each shows the container's own cgroup. A hybrid host's controller-less cgroup2
/// (`unified`) is left out, as runc 1.1 and Docker leave it: mounting it took 4-15 ms per
/// container here, for a hierarchy that limits nothing.
fn cgroup_mounts(i: usize, m: &spec::Mount, bundle: &Path) -> Result<Vec<MountPlan>, Error> {
    let root = Path::new(crate::cgroups::ROOT);
    let v1 = if crate::cgroups::is_unified(root) {
        Vec::new()
    } else {
        host_v1_hierarchies()
    };
    if v1.is_empty() {
        return Ok(vec![mount_plan(i, m, bundle)?]);
    }
    // Flags (ro, nosuid, ...) carry over to the hierarchies. The tmpfs holding them stays
    // writable: their mount points are made in it after it is mounted.
    let flags: Vec<String> = m.options.clone();
    let dest = m.destination.trim_end_matches('/');
    let mut tmpfs_opts: Vec<String> = flags.iter().filter(|o| *o != "ro").cloned().collect();
    tmpfs_opts.push("mode=755".into());
    let mut out = vec![mount_plan(
        i,
        &spec::Mount {
            destination: dest.to_string(),
            kind: Some("tmpfs".into()),
            source: Some("tmpfs".into()),
            options: tmpfs_opts,
        },
        bundle,
    )?];
    for name in &v1 {
        let mut opts = flags.clone();
        if let Some(n) = name.strip_prefix("name=") {
            opts.push(format!("name={n}"));
        } else if name == "systemd" {
            opts.push("name=systemd".into());
        } else {
            opts.extend(name.split(',').map(String::from));
        }
        out.push(mount_plan(
            i,
            &spec::Mount {
                destination: format!("{dest}/{name}"),
                kind: Some("cgroup-v1".into()),
                source: Some("cgroup".into()),
                options: opts,
            },
            bundle,
        )?);
    }
    Ok(out)
}

fn ns_flag(kind: &str) -> Option<u64> {
    Some(match kind {
        "mount" => CLONE_NEWNS,
        "pid" => CLONE_NEWPID,
        "uts" => CLONE_NEWUTS,
        "ipc" => CLONE_NEWIPC,
        "network" => CLONE_NEWNET,
        "cgroup" => CLONE_NEWCGROUP,
        "user" => CLONE_NEWUSER,
        "time" => CLONE_NEWTIME,
        _ => return None,
    })
}

fn ns_name(flag: u64) -> &'static str {
    match flag {
        CLONE_NEWNS => "mount",
        CLONE_NEWPID => "pid",
        CLONE_NEWUTS => "uts",
        CLONE_NEWIPC => "ipc",
        CLONE_NEWNET => "network",
        CLONE_NEWCGROUP => "cgroup",
        CLONE_NEWUSER => "user",
        _ => "time",
    }
}

fn id_map(field: &str, maps: &[spec::IdMapping]) -> Result<String, Error> {
    if maps.is_empty() {
        return Err(value(format!(
            "config.json: {field}: required with a new user namespace"
        )));
    }
    if maps.len() > 340 {
        return Err(value(format!("config.json: {field}: at most 340 mappings")));
    }
    Ok(maps
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size))
        .collect())
}

fn rlimit_resource(name: &str) -> Option<Resource> {
    Some(match name {
        "RLIMIT_CPU" => Resource::Cpu,
        "RLIMIT_FSIZE" => Resource::Fsize,
        "RLIMIT_DATA" => Resource::Data,
        "RLIMIT_STACK" => Resource::Stack,
        "RLIMIT_CORE" => Resource::Core,
        "RLIMIT_RSS" => Resource::Rss,
        "RLIMIT_NPROC" => Resource::Nproc,
        "RLIMIT_NOFILE" => Resource::Nofile,
        "RLIMIT_MEMLOCK" => Resource::Memlock,
        "RLIMIT_AS" => Resource::As,
        "RLIMIT_LOCKS" => Resource::Locks,
        "RLIMIT_SIGPENDING" => Resource::Sigpending,
        "RLIMIT_MSGQUEUE" => Resource::Msgqueue,
        "RLIMIT_NICE" => Resource::Nice,
        "RLIMIT_RTPRIO" => Resource::Rtprio,
        "RLIMIT_RTTIME" => Resource::Rttime,
        _ => return None,
    })
}

fn cap_mask(field: &str, names: &[String], last_cap: u32) -> Result<u64, Error> {
    let mut mask = 0u64;
    for (i, name) in names.iter().enumerate() {
        let n = caps::from_name(name).ok_or_else(|| {
            value(format!(
                "config.json: process.capabilities.{field}[{i}]: unknown capability {name:?}"
            ))
        })?;
        // Capabilities this kernel does not know are left out, as runc does.
        if n <= last_cap {
            mask |= 1 << n;
        }
    }
    Ok(mask)
}

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
        .min(63)
}

fn open_ns(kind: &'static str, path: &str) -> Result<JoinNs, Error> {
    let fd =
        rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).map_err(|e| {
            Error::Start {
                msg: format!(
                    "open {kind} namespace {path}: {}",
                    super::strerror(&e.into())
                ),
                code: 125,
            }
        })?;
    Ok(JoinNs {
        kind,
        path: path.to_string(),
        fd,
    })
}

fn exec_plan(p: &spec::Process) -> Result<ExecPlan, Error> {
    if p.args.is_empty() {
        return Err(value("config.json: process.args: must not be empty"));
    }
    let mut argv_c = Vec::with_capacity(p.args.len());
    for (i, a) in p.args.iter().enumerate() {
        argv_c.push(cstring(&format!("process.args[{i}]"), a.as_bytes())?);
    }
    let mut envp_c = Vec::with_capacity(p.env.len());
    for (i, e) in p.env.iter().enumerate() {
        if !e.contains('=') {
            return Err(value(format!(
                "config.json: process.env[{i}]: {e:?} is not NAME=VALUE"
            )));
        }
        envp_c.push(cstring(&format!("process.env[{i}]"), e.as_bytes())?);
    }
    let name = p.args[0].clone();
    if name.is_empty() {
        return Err(value("config.json: process.args[0]: must not be empty"));
    }
    let search_path = p
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .as_bytes()
        .to_vec();
    let mut argv: Vec<*const c_char> = argv_c.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const c_char> = envp_c.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());
    Ok(ExecPlan {
        has_slash: name.contains('/'),
        name,
        search_path,
        argv_c,
        envp_c,
        argv,
        envp,
    })
}

/// Read and validate `bundle/config.json` into a plan. ValueError for a malformed config,
/// StartError for what is missing on the host (rootfs, bind sources, namespace paths).
pub fn build(bundle: &Path) -> Result<Plan, Error> {
    let bundle = std::path::absolute(bundle).map_err(|e| Error::Start {
        msg: format!("bundle {}: {}", bundle.display(), super::strerror(&e)),
        code: 125,
    })?;
    let config = bundle.join("config.json");
    let bytes = std::fs::read(&config).map_err(|e| Error::Start {
        msg: format!("read {}: {}", config.display(), super::strerror(&e)),
        code: 125,
    })?;
    let spec = spec::parse(&bytes).map_err(Error::Value)?;
    from_spec(&spec, &bundle, None)
}

/// The plan of `exec`: `config` is a runtime-spec config whose namespaces are all joined by
/// path (those of `target_pid`, the container's init); root and mounts are not used.
pub fn build_exec(config: &Path, target_pid: i32) -> Result<Plan, Error> {
    let bytes = std::fs::read(config).map_err(|e| Error::Start {
        msg: format!("read {}: {}", config.display(), super::strerror(&e)),
        code: 125,
    })?;
    let spec = spec::parse(&bytes).map_err(Error::Value)?;
    let dir = config.parent().unwrap_or(Path::new("/"));
    from_spec(&spec, dir, Some(target_pid))
}

pub fn from_spec(spec: &Spec, bundle: &Path, exec_into: Option<i32>) -> Result<Plan, Error> {
    if !spec.oci_version.starts_with("1.") {
        return Err(value(format!(
            "config.json: ociVersion: {:?} is not a 1.x version",
            spec.oci_version
        )));
    }
    let process = spec
        .process
        .as_ref()
        .ok_or_else(|| value("config.json: process: required"))?;
    let (rootfs, root_readonly) = match exec_into {
        Some(_) => (PathBuf::from("/"), false),
        None => {
            let root = spec
                .root
                .as_ref()
                .ok_or_else(|| value("config.json: root: required"))?;
            if root.path.is_empty() {
                return Err(value("config.json: root.path: must not be empty"));
            }
            let rootfs: PathBuf = bundle.join(&root.path);
            let rootfs = std::fs::canonicalize(&rootfs).map_err(|e| Error::Start {
                msg: format!("rootfs {}: {}", rootfs.display(), super::strerror(&e)),
                code: 125,
            })?;
            if !rootfs.is_dir() {
                return Err(Error::Start {
                    msg: format!("rootfs {}: not a directory", rootfs.display()),
                    code: 125,
                });
            }
            if rootfs == Path::new("/") {
                return Err(value("config.json: root.path: cannot be the host's /"));
            }
            (rootfs, root.readonly)
        }
    };
    let empty = spec::Linux::default();
    let linux = spec.linux.as_ref().unwrap_or(&empty);

    // Namespaces.
    let mut new_flags = 0u64;
    let mut seen = 0u64;
    let mut join: Vec<JoinNs> = Vec::new();
    let mut join_pid = None;
    for (i, ns) in linux.namespaces.iter().enumerate() {
        let flag = ns_flag(&ns.kind).ok_or_else(|| {
            value(format!(
                "config.json: linux.namespaces[{i}].type: unknown namespace type {:?}",
                ns.kind
            ))
        })?;
        if seen & flag != 0 {
            return Err(value(format!(
                "config.json: linux.namespaces[{i}]: duplicate {} namespace",
                ns.kind
            )));
        }
        seen |= flag;
        match ns.path.as_deref() {
            Some(path) if !path.is_empty() => {
                let j = open_ns(ns_name(flag), path)?;
                if flag == CLONE_NEWPID {
                    join_pid = Some(j);
                } else if flag == CLONE_NEWUSER {
                    join.insert(0, j);
                } else {
                    join.push(j);
                }
            }
            _ => new_flags |= flag,
        }
    }
    if exec_into.is_some() && new_flags != 0 {
        return Err(value(
            "exec: linux.namespaces: every namespace must be joined by path",
        ));
    }
    // The root is set up (and pivot_root'ed) in a mount namespace of the container's own:
    // pivot_root in a joined one would move every process in it.
    if exec_into.is_none() && new_flags & CLONE_NEWNS == 0 {
        let msg = if seen & CLONE_NEWNS == 0 {
            "config.json: linux.namespaces: a mount namespace is required"
        } else {
            "config.json: linux.namespaces: joining a mount namespace by path is not supported"
        };
        return Err(value(msg));
    }
    let new_userns = new_flags & CLONE_NEWUSER != 0;
    if new_userns && (!join.is_empty() || join_pid.is_some()) {
        return Err(value(
            "config.json: linux.namespaces: a new user namespace together with namespaces joined by path is not supported yet",
        ));
    }
    let joins_userns = join.first().is_some_and(|j| j.kind == "user");
    let (clone_flags, unshare_flags) = if joins_userns {
        if new_flags & (CLONE_NEWPID | CLONE_NEWTIME) != 0 {
            return Err(value(
                "config.json: linux.namespaces: joining a user namespace by path together with a new pid or time namespace is not supported yet",
            ));
        }
        (0, new_flags)
    } else {
        // The cgroup namespace is made after the parent moved the child into its cgroup (the
        // child unshares it past the sync), so that cgroup is the namespace's root.
        (new_flags & !CLONE_NEWCGROUP, new_flags & CLONE_NEWCGROUP)
    };
    let (uid_map, gid_map) = if new_userns {
        (
            id_map("linux.uidMappings", &linux.uid_mappings)?,
            id_map("linux.gidMappings", &linux.gid_mappings)?,
        )
    } else {
        (String::new(), String::new())
    };

    let (propagation_start, propagation_after) = match linux.rootfs_propagation.as_deref() {
        None | Some("") | Some("private") | Some("rprivate") => (MS_REC | MS_PRIVATE, 0),
        Some("slave") | Some("rslave") => (MS_REC | MS_SLAVE, 0),
        Some(p @ ("shared" | "rshared" | "unbindable" | "runbindable")) => {
            let rec = if p.starts_with('r') { MS_REC } else { 0 };
            (
                MS_REC | MS_PRIVATE,
                rec | propagation_flag(p.trim_start_matches('r')),
            )
        }
        Some(other) => {
            return Err(value(format!(
                "config.json: linux.rootfsPropagation: unknown propagation {other:?}"
            )))
        }
    };

    let no_mounts: &[spec::Mount] = &[];
    let spec_mounts = if exec_into.is_some() {
        no_mounts
    } else {
        &spec.mounts
    };
    let mut mounts = Vec::with_capacity(spec_mounts.len());
    let mut dev_tmpfs = false;
    for (i, m) in spec_mounts.iter().enumerate() {
        if m.kind.as_deref() == Some("cgroup") && !m.options.iter().any(|o| o.contains("bind")) {
            mounts.extend(cgroup_mounts(i, m, bundle)?);
            continue;
        }
        let mp = mount_plan(i, m, bundle)?;
        if mp.target.rel.as_bytes() == b"dev" {
            dev_tmpfs = matches!(mp.kind, MountKind::Fs { .. });
        }
        mounts.push(mp);
    }

    let mut sysctls = Vec::with_capacity(linux.sysctl.len());
    for (key, val) in linux.sysctl.iter().filter(|_| exec_into.is_none()) {
        let rel = if key.contains('/') {
            key.trim_matches('/').to_string()
        } else {
            key.replace('.', "/")
        };
        if rel.is_empty()
            || rel
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(value(format!(
                "config.json: linux.sysctl: invalid key {key:?}"
            )));
        }
        sysctls.push(Sysctl {
            key: key.clone(),
            path: cstring("linux.sysctl", format!("proc/sys/{rel}").as_bytes())?,
            value: val.as_bytes().to_vec(),
        });
    }
    if !sysctls.is_empty() && !mounts.iter().any(|m| m.target.rel.as_bytes() == b"proc") {
        return Err(value(
            "config.json: linux.sysctl: needs a /proc mount in mounts",
        ));
    }

    let mut readonly_paths = Vec::with_capacity(linux.readonly_paths.len());
    for (i, p) in linux
        .readonly_paths
        .iter()
        .enumerate()
        .filter(|_| exec_into.is_none())
    {
        readonly_paths.push(path_plan(&format!("linux.readonlyPaths[{i}]"), p)?);
    }
    let mut masked_paths = Vec::with_capacity(linux.masked_paths.len());
    for (i, p) in linux
        .masked_paths
        .iter()
        .enumerate()
        .filter(|_| exec_into.is_none())
    {
        masked_paths.push(path_plan(&format!("linux.maskedPaths[{i}]"), p)?);
    }

    let hostname = match spec.hostname.as_deref().filter(|_| exec_into.is_none()) {
        None | Some("") => None,
        Some(h) => {
            if seen & CLONE_NEWUTS == 0 {
                return Err(value(
                    "config.json: hostname: needs a uts namespace in linux.namespaces",
                ));
            }
            if h.len() > 64 {
                return Err(value("config.json: hostname: longer than 64 bytes"));
            }
            Some(h.as_bytes().to_vec())
        }
    };

    let oom_score_adj = match process.oom_score_adj {
        None => None,
        Some(v) if (-1000..=1000).contains(&v) => Some(v.to_string().into_bytes()),
        Some(v) => {
            return Err(value(format!(
                "config.json: process.oomScoreAdj: {v} is outside -1000..1000"
            )))
        }
    };

    let mut rlimits = Vec::with_capacity(process.rlimits.len());
    for (i, r) in process.rlimits.iter().enumerate() {
        let resource = rlimit_resource(&r.kind).ok_or_else(|| {
            value(format!(
                "config.json: process.rlimits[{i}].type: unknown resource {:?}",
                r.kind
            ))
        })?;
        if r.soft > r.hard {
            return Err(value(format!(
                "config.json: process.rlimits[{i}]: soft limit {} is above the hard limit {}",
                r.soft, r.hard
            )));
        }
        rlimits.push(RlimitPlan {
            name: r.kind.clone(),
            resource,
            soft: r.soft,
            hard: r.hard,
        });
    }

    let last_cap = last_cap();
    let caps = match &process.capabilities {
        None => None,
        Some(c) => Some(CapPlan {
            bounding: cap_mask("bounding", &c.bounding, last_cap)?,
            effective: cap_mask("effective", &c.effective, last_cap)?,
            permitted: cap_mask("permitted", &c.permitted, last_cap)?,
            inheritable: cap_mask("inheritable", &c.inheritable, last_cap)?,
            ambient: cap_mask("ambient", &c.ambient, last_cap)?,
        }),
    };

    let cwd_str = if process.cwd.is_empty() {
        "/"
    } else {
        process.cwd.as_str()
    };
    let cwd = path_plan("process.cwd", cwd_str)?;
    let umask = process.user.umask.unwrap_or(0o022);
    if umask > 0o777 {
        return Err(value(format!(
            "config.json: process.user.umask: {umask:#o} is not a file mode mask"
        )));
    }

    let seccomp = match &linux.seccomp {
        Some(s) => Some(seccomp::compile(s)?),
        None => None,
    };

    let mut devices = Vec::new();
    if exec_into.is_none() {
        for (i, d) in linux.devices.iter().enumerate() {
            devices.push(device_plan(i, d)?);
        }
    }

    let parent_is_root = rustix::process::geteuid().is_root();
    Ok(Plan {
        rootfs_display: rootfs.display().to_string(),
        rootfs: cstring("root.path", rootfs.as_os_str().as_bytes())?,
        root_readonly,
        clone_flags,
        unshare_flags,
        join,
        join_pid,
        new_userns,
        uid_map,
        gid_map,
        setgroups_allowed: !new_userns || parent_is_root,
        new_netns: new_flags & CLONE_NEWNET != 0 && exec_into.is_none(),
        propagation_start,
        propagation_after,
        mounts,
        dev_tmpfs,
        sysctls,
        readonly_paths,
        masked_paths,
        hostname,
        oom_score_adj,
        rlimits,
        uid: process.user.uid,
        gid: process.user.gid,
        additional_gids: process
            .user
            .additional_gids
            .iter()
            .map(|g| rustix::process::Gid::from_raw(*g))
            .collect(),
        umask,
        caps,
        last_cap,
        no_new_privs: process.no_new_privileges,
        seccomp,
        cwd,
        exec: exec_plan(process)?,
        stdio: None,
        stdio_override: None,
        stdin: None,
        cgroup: match exec_into {
            Some(_) => None,
            None => cgroup_plan(spec, linux, bundle)?.map(|mut cg| {
                with_default_devices(&mut cg.resources.device_rules, &linux.devices);
                cg
            }),
        },
        exec_into,
        terminal: process.terminal,
        console_size: process
            .console_size
            .as_ref()
            .map(|c| (c.height as u16, c.width as u16)),
        init: exec_into.is_none()
            && spec.annotations.get("io.pyrun.init").map(String::as_str) == Some("true"),
        devices,
        detached: false,
        gate: None,
        preserve_fds: 0,
        no_pivot: false,
        on_created: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_and_split() {
        let p = path_plan("x", "/a/./b/../c//d").unwrap();
        assert_eq!(p.rel.to_bytes(), b"a/c/d");
        let parents: Vec<_> = p
            .parents
            .iter()
            .map(|(a, b)| (a.to_str().unwrap(), b.to_str().unwrap()))
            .collect();
        assert_eq!(parents, vec![(".", "a"), ("a", "c"), ("a/c", "d")]);
        assert_eq!(path_plan("x", "/../..").unwrap().rel.to_bytes(), b".");
        assert!(path_plan("x", "rel").is_err());
    }

    #[test]
    fn mount_options() {
        let o = parse_options(&[
            "nosuid".into(),
            "strictatime".into(),
            "mode=755".into(),
            "size=65536k".into(),
            "newinstance".into(),
            "ro".into(),
            "rw".into(),
            "rslave".into(),
            "rnodev".into(),
        ]);
        assert_eq!(
            o.set,
            MOUNT_ATTR_NOSUID | MOUNT_ATTR_STRICTATIME | MOUNT_ATTR_NODEV
        );
        assert_eq!(o.clr, MOUNT_ATTR_ATIME_MASK | MOUNT_ATTR_RDONLY);
        assert!(o.recursive_attr);
        assert_eq!(o.propagation, MS_SLAVE as u64);
        assert!(o.propagation_recursive);
        assert_eq!(
            o.params,
            vec![
                ("mode".to_string(), Some("755".to_string())),
                ("size".to_string(), Some("65536k".to_string())),
                ("newinstance".to_string(), None)
            ]
        );
        let o = parse_options(&["rbind".into(), "ro".into()]);
        assert!(o.bind && o.rbind);
        assert_eq!(o.set, MOUNT_ATTR_RDONLY);
        assert!(!o.recursive_attr);
    }

    #[test]
    fn capability_masks() {
        let docker: Vec<String> = [
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FSETID",
            "CAP_FOWNER",
            "CAP_MKNOD",
            "CAP_NET_RAW",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_SETFCAP",
            "CAP_SETPCAP",
            "CAP_NET_BIND_SERVICE",
            "CAP_SYS_CHROOT",
            "CAP_KILL",
            "CAP_AUDIT_WRITE",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(cap_mask("bounding", &docker, 40).unwrap(), 0xa80425fb);
        let e = cap_mask("effective", &["CAP_NOPE".to_string()], 40).unwrap_err();
        assert!(matches!(e, Error::Value(m) if m.contains("process.capabilities.effective[0]")));
        assert_eq!(
            cap_mask("bounding", &["CAP_CHECKPOINT_RESTORE".into()], 39).unwrap(),
            0
        );
    }
}

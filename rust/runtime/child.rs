//! The container's first process between clone and exec. It runs on a copy of a possibly
//! multi-threaded caller's memory, so it only makes system calls on the pre-built [`Plan`]: no
//! allocation, no locks, no formatting, no panics. A failure is reported to the parent as a
//! fixed-size binary record on the error pipe ({step, index, errno, detail}); the parent turns
//! it into a message. The pipe is close-on-exec, so a successful exec shows as EOF.

// The failure record travels by value: boxing it would allocate, which the child may not do.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, CWD};
use rustix::io::Errno;
use rustix::mount::{
    self as rmount, FsMountFlags, FsOpenFlags, MountAttrFlags, MountPropagationFlags,
    MoveMountFlags, OpenTreeFlags, UnmountFlags,
};
use rustix::process::{Gid, Rlimit, Uid};

use super::plan::{DevicePlan, FsParam, MountKind, MountPlan, PathPlan, Plan};
use super::sys;

/// Size of the free-text detail in a failure record (a filesystem's own error message).
pub const DETAIL: usize = 200;
/// Size of a failure record on the error pipe; well under PIPE_BUF, so writes are atomic.
pub const RECORD_LEN: usize = 16 + DETAIL;

const PROC_SUPER_MAGIC: i64 = 0x9fa0;

/// What the child was doing when it failed. The index says which mount, path, sysctl,
/// rlimit or capability (or which sub-step).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    Sync = 1,
    Prctl,
    UserNsRoot,
    Setns,
    Unshare,
    RootPropagation,
    BindRoot,
    OpenRoot,
    MountTarget,
    MountSymlink,
    Mount,
    MountAttr,
    MountPropagation,
    Device,
    DevSymlink,
    OomScoreAdj,
    Sysctl,
    SysctlNotProc,
    ReadonlyPath,
    MaskedPath,
    PivotRoot,
    RootReadonly,
    RootPropagationAfter,
    Hostname,
    Loopback,
    Rlimit,
    Cwd,
    CwdUnreachable,
    KeepCaps,
    Bounding,
    Setgroups,
    Setresgid,
    Setresuid,
    Capset,
    Ambient,
    NoNewPrivs,
    CloseFds,
    Exec,
    ExecNotFound,
    Stdio,
    Seccomp,
    Init,
    Console,
    LinuxDevice,
    CgroupJoin,
}

const STEPS: [Step; 45] = [
    Step::Sync,
    Step::Prctl,
    Step::UserNsRoot,
    Step::Setns,
    Step::Unshare,
    Step::RootPropagation,
    Step::BindRoot,
    Step::OpenRoot,
    Step::MountTarget,
    Step::MountSymlink,
    Step::Mount,
    Step::MountAttr,
    Step::MountPropagation,
    Step::Device,
    Step::DevSymlink,
    Step::OomScoreAdj,
    Step::Sysctl,
    Step::SysctlNotProc,
    Step::ReadonlyPath,
    Step::MaskedPath,
    Step::PivotRoot,
    Step::RootReadonly,
    Step::RootPropagationAfter,
    Step::Hostname,
    Step::Loopback,
    Step::Rlimit,
    Step::Cwd,
    Step::CwdUnreachable,
    Step::KeepCaps,
    Step::Bounding,
    Step::Setgroups,
    Step::Setresgid,
    Step::Setresuid,
    Step::Capset,
    Step::Ambient,
    Step::NoNewPrivs,
    Step::CloseFds,
    Step::Exec,
    Step::ExecNotFound,
    Step::Stdio,
    Step::Seccomp,
    Step::Init,
    Step::Console,
    Step::LinuxDevice,
    Step::CgroupJoin,
];

impl Step {
    fn from_u32(v: u32) -> Option<Step> {
        STEPS.iter().copied().find(|s| *s as u32 == v)
    }
}

/// A failure of the child, as sent over the error pipe.
#[derive(Clone, Copy)]
pub struct Failure {
    pub step: Step,
    pub index: u32,
    pub errno: i32,
    pub detail: [u8; DETAIL],
    pub detail_len: usize,
}

impl Failure {
    pub fn new(step: Step, index: u32, errno: Errno) -> Failure {
        Failure {
            step,
            index,
            errno: errno.raw_os_error(),
            detail: [0; DETAIL],
            detail_len: 0,
        }
    }

    /// The exit status the caller reports: 127 not found, 126 cannot execute, 125 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self.step {
            Step::ExecNotFound => 127,
            Step::Exec if self.errno == libc::ENOENT || self.errno == libc::ENOTDIR => 127,
            Step::Exec => 126,
            _ => 125,
        }
    }

    pub fn detail(&self) -> &[u8] {
        &self.detail[..self.detail_len.min(DETAIL)]
    }

    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        let (head, detail) = out.split_at_mut(16);
        head[0..4].copy_from_slice(&(self.step as u32).to_ne_bytes());
        head[4..8].copy_from_slice(&self.index.to_ne_bytes());
        head[8..12].copy_from_slice(&self.errno.to_ne_bytes());
        head[12..16].copy_from_slice(&(self.detail_len.min(DETAIL) as u32).to_ne_bytes());
        detail.copy_from_slice(&self.detail);
        out
    }

    pub fn decode(rec: &[u8]) -> Option<Failure> {
        if rec.len() != RECORD_LEN {
            return None;
        }
        let word = |i: usize| u32::from_ne_bytes([rec[i], rec[i + 1], rec[i + 2], rec[i + 3]]);
        let mut detail = [0u8; DETAIL];
        detail.copy_from_slice(&rec[16..]);
        Some(Failure {
            step: Step::from_u32(word(0))?,
            index: word(4),
            errno: word(8) as i32,
            detail,
            detail_len: (word(12) as usize).min(DETAIL),
        })
    }
}

type Res<T> = Result<T, Failure>;

fn at(step: Step, index: u32) -> impl Fn(Errno) -> Failure {
    move |e| Failure::new(step, index, e)
}

/// The pipe ends the child inherits: it reads `sync_r`, writes `err_w` and closes the others.
pub struct ChildPipes<'a> {
    pub sync_r: BorrowedFd<'a>,
    pub sync_w: BorrowedFd<'a>,
    pub err_r: BorrowedFd<'a>,
    pub err_w: BorrowedFd<'a>,
    /// process.terminal: the child's end of the socket the pty master goes back through.
    pub console: Option<BorrowedFd<'a>>,
    /// v1 cgroups' `tasks` files the child joins by writing "0" (cgroups::open_tasks).
    pub cgroup_tasks: &'a [OwnedFd],
}

/// Entry point of the child right after clone. Never returns: execs the container process or
/// reports a failure record and exits with 125/126/127.
pub fn main(plan: &Plan, pipes: &ChildPipes<'_>) -> ! {
    sys::reset_signals();
    sys::close_raw(pipes.sync_w.as_raw_fd());
    sys::close_raw(pipes.err_r.as_raw_fd());
    let failure = match setup(plan, pipes) {
        Ok(never) => match never {},
        Err(f) => f,
    };
    let rec = failure.encode();
    let _ = rustix::io::write(pipes.err_w, &rec);
    sys::exit_now(failure.exit_code())
}

const IN_ROOT: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

fn openat2(root: BorrowedFd<'_>, path: &CStr, flags: OFlags) -> Result<OwnedFd, Errno> {
    loop {
        match rfs::openat2(root, path, flags | OFlags::CLOEXEC, Mode::empty(), IN_ROOT) {
            Err(Errno::AGAIN) | Err(Errno::INTR) => continue,
            r => return r,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Leaf {
    Dir,
    File,
}

/// Open `p` under `root` (RESOLVE_IN_ROOT: symlinks and ".." cannot leave it), creating the
/// missing components: directories, and an empty file as the last one when `leaf` is File.
/// Each component is created relative to an fd of its resolved parent, never by host path.
fn resolve_create(root: BorrowedFd<'_>, p: &PathPlan, leaf: Leaf) -> Result<OwnedFd, Errno> {
    match openat2(root, &p.rel, OFlags::PATH) {
        Err(Errno::NOENT) => {}
        r => return r,
    }
    let n = p.parents.len();
    for (i, (parent, name)) in p.parents.iter().enumerate() {
        let dir = openat2(root, parent, OFlags::PATH | OFlags::DIRECTORY)?;
        let r = if i + 1 == n && leaf == Leaf::File {
            rfs::openat(
                &dir,
                name.as_c_str(),
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .map(drop)
        } else {
            rfs::mkdirat(&dir, name.as_c_str(), Mode::from_raw_mode(0o755))
        };
        match r {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e),
        }
    }
    openat2(root, &p.rel, OFlags::PATH)
}

/// The first error message (else any message) a filesystem context logged, for the detail.
fn read_fs_log(fs: BorrowedFd<'_>, f: &mut Failure) {
    let mut buf = [0u8; 256];
    for _ in 0..16 {
        let n = match rustix::io::read(fs, &mut buf) {
            Ok(n) if n > 0 => n.min(buf.len()),
            _ => return,
        };
        let msg = &buf[..n];
        let is_error = msg.starts_with(b"e ");
        if is_error || f.detail_len == 0 {
            let text = if msg.len() > 2 && msg[1] == b' ' {
                &msg[2..]
            } else {
                msg
            };
            let len = text.len().min(DETAIL);
            f.detail[..len].copy_from_slice(&text[..len]);
            f.detail_len = len;
        }
        if is_error {
            return;
        }
    }
}

fn fs_failure(step: Step, index: u32, e: Errno, fs: BorrowedFd<'_>) -> Failure {
    let mut f = Failure::new(step, index, e);
    read_fs_log(fs, &mut f);
    f
}

fn is_symlink(fd: BorrowedFd<'_>) -> Result<bool, Errno> {
    let st = rfs::fstat(fd)?;
    Ok(FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
}

fn do_mount(root: BorrowedFd<'_>, m: &MountPlan, i: u32) -> Res<()> {
    if m.refuse_symlink {
        match openat2(root, &m.target.rel, OFlags::PATH | OFlags::NOFOLLOW) {
            Ok(fd) => {
                if is_symlink(fd.as_fd()).map_err(at(Step::MountTarget, i))? {
                    return Err(Failure::new(Step::MountSymlink, i, Errno::LOOP));
                }
            }
            Err(Errno::NOENT) => {}
            Err(e) => return Err(Failure::new(Step::MountTarget, i, e)),
        }
    }
    let leaf = match m.kind {
        MountKind::Bind { is_dir: false, .. } => Leaf::File,
        _ => Leaf::Dir,
    };
    let target = resolve_create(root, &m.target, leaf).map_err(at(Step::MountTarget, i))?;
    let mnt = match &m.kind {
        MountKind::Bind {
            source, recursive, ..
        } => {
            let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
            if *recursive {
                flags |= OpenTreeFlags::AT_RECURSIVE;
            }
            let tree =
                rmount::open_tree(CWD, source.as_c_str(), flags).map_err(at(Step::Mount, i))?;
            if m.attr_set | m.attr_clr != 0 {
                sys::mount_setattr(tree.as_fd(), m.attr_recursive, m.attr_set, m.attr_clr, 0)
                    .map_err(at(Step::MountAttr, i))?;
            }
            tree
        }
        MountKind::Fs {
            fstype,
            source,
            params,
        } => {
            let fs = rmount::fsopen(fstype.as_c_str(), FsOpenFlags::FSOPEN_CLOEXEC)
                .map_err(at(Step::Mount, i))?;
            let fsf = |e| fs_failure(Step::Mount, i, e, fs.as_fd());
            if let Some(src) = source {
                rmount::fsconfig_set_string(&fs, c"source", src.as_c_str()).map_err(fsf)?;
            }
            for p in params {
                match p {
                    FsParam::Flag(k) => rmount::fsconfig_set_flag(&fs, k.as_c_str()),
                    FsParam::Str(k, v) => {
                        rmount::fsconfig_set_string(&fs, k.as_c_str(), v.as_c_str())
                    }
                }
                .map_err(fsf)?;
            }
            rmount::fsconfig_create(&fs).map_err(fsf)?;
            let attrs = MountAttrFlags::from_bits_retain(m.attr_set as u32);
            rmount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs).map_err(fsf)?
        }
    };
    rmount::move_mount(
        &mnt,
        c"",
        &target,
        c"",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(at(Step::Mount, i))?;
    if m.propagation != 0 {
        sys::mount_setattr(mnt.as_fd(), m.propagation_recursive, 0, 0, m.propagation)
            .map_err(at(Step::MountPropagation, i))?;
    }
    Ok(())
}

struct Device {
    name: &'static CStr,
    host: &'static CStr,
    major: u32,
    minor: u32,
}

pub const DEVICE_NAMES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

const DEVICES: [Device; 6] = [
    Device {
        name: c"null",
        host: c"/dev/null",
        major: 1,
        minor: 3,
    },
    Device {
        name: c"zero",
        host: c"/dev/zero",
        major: 1,
        minor: 5,
    },
    Device {
        name: c"full",
        host: c"/dev/full",
        major: 1,
        minor: 7,
    },
    Device {
        name: c"random",
        host: c"/dev/random",
        major: 1,
        minor: 8,
    },
    Device {
        name: c"urandom",
        host: c"/dev/urandom",
        major: 1,
        minor: 9,
    },
    Device {
        name: c"tty",
        host: c"/dev/tty",
        major: 5,
        minor: 0,
    },
];

pub const DEV_LINK_NAMES: [&str; 5] = ["ptmx", "fd", "stdin", "stdout", "stderr"];

const DEV_LINKS: [(&CStr, &CStr); 5] = [
    (c"pts/ptmx", c"ptmx"),
    (c"/proc/self/fd", c"fd"),
    (c"/proc/self/fd/0", c"stdin"),
    (c"/proc/self/fd/1", c"stdout"),
    (c"/proc/self/fd/2", c"stderr"),
];

fn move_onto(tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> Result<(), Errno> {
    rmount::move_mount(
        tree,
        c"",
        target,
        c"",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
}

fn clone_host(path: &CStr) -> Result<OwnedFd, Errno> {
    rmount::open_tree(
        CWD,
        path,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
}

/// Bind the host's device node over an empty file (no CAP_MKNOD, e.g. in a user namespace).
fn bind_device(dev: BorrowedFd<'_>, d: &Device) -> Result<(), Errno> {
    for _ in 0..2 {
        match rfs::openat(
            dev,
            d.name,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o666),
        ) {
            Ok(_) => break,
            Err(Errno::EXIST) => {
                let st = rfs::statat(dev, d.name, AtFlags::SYMLINK_NOFOLLOW)?;
                if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile {
                    break;
                }
                rfs::unlinkat(dev, d.name, AtFlags::empty())?;
            }
            Err(e) => return Err(e),
        }
    }
    let target = rfs::openat(
        dev,
        d.name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if is_symlink(target.as_fd())? {
        return Err(Errno::LOOP);
    }
    let tree = clone_host(d.host)?;
    move_onto(tree.as_fd(), target.as_fd())
}

fn make_device(dev: BorrowedFd<'_>, d: &Device) -> Result<(), Errno> {
    let rdev = rfs::makedev(d.major, d.minor);
    for _ in 0..2 {
        match rfs::mknodat(
            dev,
            d.name,
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o666),
            rdev,
        ) {
            Ok(()) => return Ok(()),
            Err(Errno::EXIST) => {
                // Something is there already (a symlink planted by a later mount, say):
                // keep a correct device node, replace anything else.
                let st = rfs::statat(dev, d.name, AtFlags::SYMLINK_NOFOLLOW)?;
                if FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice
                    && st.st_rdev == rdev
                {
                    return Ok(());
                }
                rfs::unlinkat(dev, d.name, AtFlags::empty())?;
            }
            Err(Errno::PERM) => return bind_device(dev, d),
            Err(e) => return Err(e),
        }
    }
    Err(Errno::EXIST)
}

fn make_devices(root: BorrowedFd<'_>) -> Res<()> {
    let dev =
        openat2(root, c"dev", OFlags::PATH | OFlags::DIRECTORY).map_err(at(Step::Device, 0))?;
    for (i, d) in DEVICES.iter().enumerate() {
        make_device(dev.as_fd(), d).map_err(at(Step::Device, i as u32))?;
    }
    for (i, (target, name)) in DEV_LINKS.iter().enumerate() {
        if i == 0 {
            match rfs::unlinkat(&dev, *name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(Failure::new(Step::DevSymlink, 0, e)),
            }
        }
        match rfs::symlinkat(*target, &dev, *name) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(Failure::new(Step::DevSymlink, i as u32, e)),
        }
    }
    Ok(())
}

/// A `linux.devices` node: mknod (replacing whatever is there), or where mknod is refused
/// (a user namespace) a bind of the host's node over an empty file; then its owner.
fn linux_device(root: BorrowedFd<'_>, d: &DevicePlan) -> Result<(), Errno> {
    let dir = resolve_create(root, &d.dir, Leaf::Dir)?;
    match rfs::unlinkat(&dir, d.name.as_c_str(), AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(e) => return Err(e),
    }
    match rfs::mknodat(
        &dir,
        d.name.as_c_str(),
        d.kind,
        Mode::from_raw_mode(d.mode),
        d.rdev,
    ) {
        Ok(()) => {}
        Err(Errno::PERM) if d.kind != FileType::Fifo => {
            rfs::openat(
                &dir,
                d.name.as_c_str(),
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )?;
            let target = rfs::openat(
                &dir,
                d.name.as_c_str(),
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let tree = clone_host(d.host.as_c_str())?;
            return move_onto(tree.as_fd(), target.as_fd());
        }
        Err(e) => return Err(e),
    }
    rfs::chownat(
        &dir,
        d.name.as_c_str(),
        Some(Uid::from_raw(d.uid)),
        Some(Gid::from_raw(d.gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
}

/// A terminal container's /dev/console: a bind of its pty (runtime-spec), on a file of the
/// container's own /dev (never through a symlink, CVE-2025-52565 class).
fn bind_console(slave: BorrowedFd<'_>) -> Result<(), Errno> {
    let dev = match rfs::open(
        c"/dev",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    match rfs::openat(
        &dev,
        c"console",
        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    ) {
        Ok(_) | Err(Errno::EXIST) => {}
        Err(e) => return Err(e),
    }
    let target = rfs::openat(
        &dev,
        c"console",
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if is_symlink(target.as_fd())? {
        return Err(Errno::LOOP);
    }
    let tree = rmount::open_tree(
        slave,
        c"",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH,
    )?;
    move_onto(tree.as_fd(), target.as_fd())
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> Result<(), Errno> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(0) => return Err(Errno::IO),
            Ok(n) => data = &data[n.min(data.len())..],
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn write_sysctl(root: BorrowedFd<'_>, path: &CStr, value: &[u8], i: u32) -> Res<()> {
    let flags = OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let resolve = IN_ROOT | ResolveFlags::NO_SYMLINKS;
    let fd = loop {
        match rfs::openat2(root, path, flags, Mode::empty(), resolve) {
            Err(Errno::AGAIN) | Err(Errno::INTR) => continue,
            r => break r.map_err(at(Step::Sysctl, i))?,
        }
    };
    // A decoy mounted over /proc/sys must not receive the write (CVE-2025-52881 class).
    let st = rfs::fstatfs(&fd).map_err(at(Step::Sysctl, i))?;
    if st.f_type as i64 != PROC_SUPER_MAGIC {
        return Err(Failure::new(Step::SysctlNotProc, i, Errno::XDEV));
    }
    write_all(fd.as_fd(), value).map_err(at(Step::Sysctl, i))
}

fn readonly_path(root: BorrowedFd<'_>, p: &PathPlan, i: u32) -> Res<()> {
    let fd = match openat2(root, &p.rel, OFlags::PATH) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(Failure::new(Step::ReadonlyPath, i, e)),
    };
    let f = at(Step::ReadonlyPath, i);
    let tree = rmount::open_tree(
        &fd,
        c"",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH
            | OpenTreeFlags::AT_RECURSIVE,
    )
    .map_err(&f)?;
    let attrs = sys::MOUNT_ATTR_RDONLY
        | sys::MOUNT_ATTR_NOSUID
        | sys::MOUNT_ATTR_NODEV
        | sys::MOUNT_ATTR_NOEXEC;
    sys::mount_setattr(tree.as_fd(), true, attrs, 0, 0).map_err(&f)?;
    move_onto(tree.as_fd(), fd.as_fd()).map_err(&f)
}

fn masked_path(root: BorrowedFd<'_>, p: &PathPlan, i: u32) -> Res<()> {
    let fd = match openat2(root, &p.rel, OFlags::PATH) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(Failure::new(Step::MaskedPath, i, e)),
    };
    let f = at(Step::MaskedPath, i);
    let st = rfs::fstat(&fd).map_err(&f)?;
    let mnt = if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
        let fs = rmount::fsopen(c"tmpfs", FsOpenFlags::FSOPEN_CLOEXEC).map_err(&f)?;
        rmount::fsconfig_create(&fs).map_err(&f)?;
        rmount::fsmount(
            &fs,
            FsMountFlags::FSMOUNT_CLOEXEC,
            MountAttrFlags::MOUNT_ATTR_RDONLY
                | MountAttrFlags::MOUNT_ATTR_NOSUID
                | MountAttrFlags::MOUNT_ATTR_NODEV
                | MountAttrFlags::MOUNT_ATTR_NOEXEC,
        )
        .map_err(&f)?
    } else {
        // The host's /dev/null, not the image's (CVE-2025-31133 class).
        clone_host(c"/dev/null").map_err(&f)?
    };
    move_onto(mnt.as_fd(), fd.as_fd()).map_err(&f)
}

fn pivot(root: BorrowedFd<'_>) -> Res<()> {
    rustix::process::fchdir(root).map_err(at(Step::PivotRoot, 0))?;
    rustix::process::pivot_root(c".", c".").map_err(at(Step::PivotRoot, 1))?;
    // The old root now sits on top of the new one: detach it without propagating anything.
    rmount::mount_change(
        c".",
        MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC,
    )
    .map_err(at(Step::PivotRoot, 2))?;
    rmount::unmount(c".", UnmountFlags::DETACH).map_err(at(Step::PivotRoot, 3))?;
    rustix::process::chdir(c"/").map_err(at(Step::PivotRoot, 4))
}

/// `--no-pivot`: the root mount moved onto / (MS_MOVE) and the process chrooted into it, as
/// runc does; the old root stays underneath, out of reach of a process without CAP_SYS_ADMIN
/// (Docker's default set lacks it) or CAP_SYS_CHROOT.
fn move_root(root: BorrowedFd<'_>) -> Res<()> {
    rustix::process::fchdir(root).map_err(at(Step::PivotRoot, 0))?;
    rmount::mount_move(c".", c"/").map_err(at(Step::PivotRoot, 1))?;
    rustix::process::chroot(c".").map_err(at(Step::PivotRoot, 1))?;
    rustix::process::chdir(c"/").map_err(at(Step::PivotRoot, 4))
}

fn limit(v: u64) -> Option<u64> {
    if v == u64::MAX {
        None
    } else {
        Some(v)
    }
}

fn min_limit(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn set_rlimits(p: &Plan) -> Res<()> {
    for (i, r) in p.rlimits.iter().enumerate() {
        let want = Rlimit {
            current: limit(r.soft),
            maximum: limit(r.hard),
        };
        match rustix::process::prlimit(None, r.resource, want) {
            Ok(_) => {}
            Err(Errno::PERM) => {
                // Raising the hard limit needs CAP_SYS_RESOURCE: clamp to the current one.
                let cur = rustix::process::getrlimit(r.resource);
                let maximum = min_limit(want.maximum, cur.maximum);
                let current = min_limit(want.current, maximum);
                rustix::process::prlimit(None, r.resource, Rlimit { current, maximum })
                    .map_err(at(Step::Rlimit, i as u32))?;
            }
            Err(e) => return Err(Failure::new(Step::Rlimit, i as u32, e)),
        }
    }
    Ok(())
}

/// The container's root: propagation, the rootfs bind, every mount, /dev, sysctls, read-only
/// and masked paths, pivot_root, hostname and loopback. Skipped by `exec`, which joined the
/// mount namespace of a container whose root is set up already.
fn setup_root(p: &Plan) -> Res<()> {
    // The root filesystem.
    rmount::mount_change(
        c"/",
        MountPropagationFlags::from_bits_retain(p.propagation_start),
    )
    .map_err(at(Step::RootPropagation, 0))?;
    rmount::mount_bind_recursive(p.rootfs.as_c_str(), p.rootfs.as_c_str())
        .map_err(at(Step::BindRoot, 0))?;
    let root = rfs::open(
        p.rootfs.as_c_str(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(at(Step::OpenRoot, 0))?;
    for (i, m) in p.mounts.iter().enumerate() {
        do_mount(root.as_fd(), m, i as u32)?;
    }
    if p.dev_tmpfs {
        make_devices(root.as_fd())?;
    }
    for (i, d) in p.devices.iter().enumerate() {
        linux_device(root.as_fd(), d).map_err(at(Step::LinuxDevice, i as u32))?;
    }
    if let Some(v) = &p.oom_score_adj {
        let fd = rfs::open(
            c"/proc/self/oom_score_adj",
            OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(at(Step::OomScoreAdj, 0))?;
        write_all(fd.as_fd(), v).map_err(at(Step::OomScoreAdj, 0))?;
    }
    for (i, s) in p.sysctls.iter().enumerate() {
        write_sysctl(root.as_fd(), &s.path, &s.value, i as u32)?;
    }
    for (i, r) in p.readonly_paths.iter().enumerate() {
        readonly_path(root.as_fd(), r, i as u32)?;
    }
    for (i, m) in p.masked_paths.iter().enumerate() {
        masked_path(root.as_fd(), m, i as u32)?;
    }
    // Create a missing working directory now, while the root may still be written.
    resolve_create(root.as_fd(), &p.cwd, Leaf::Dir).map_err(at(Step::Cwd, 0))?;
    if p.no_pivot {
        move_root(root.as_fd())?;
    } else {
        pivot(root.as_fd())?;
    }
    drop(root);

    if p.root_readonly {
        let slash = rfs::open(
            c"/",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(at(Step::RootReadonly, 0))?;
        sys::mount_setattr(slash.as_fd(), false, sys::MOUNT_ATTR_RDONLY, 0, 0)
            .map_err(at(Step::RootReadonly, 0))?;
    }
    if p.propagation_after != 0 {
        rmount::mount_change(
            c"/",
            MountPropagationFlags::from_bits_retain(p.propagation_after),
        )
        .map_err(at(Step::RootPropagationAfter, 0))?;
    }
    if let Some(h) = &p.hostname {
        rustix::system::sethostname(h).map_err(at(Step::Hostname, 0))?;
    }
    if p.new_netns {
        sys::loopback_up().map_err(at(Step::Loopback, 0))?;
    }
    Ok(())
}

fn setup(p: &Plan, pipes: &ChildPipes<'_>) -> Res<Infallible> {
    if !p.detached {
        sys::set_pdeathsig(libc::SIGKILL).map_err(at(Step::Prctl, 0))?;
    }
    // Not dumpable: no container process can ptrace us or open our /proc/PID/exe or fds
    // while we still hold the host's view (CVE-2016-9962, CVE-2019-5736 class).
    sys::set_dumpable(false).map_err(at(Step::Prctl, 1))?;

    // Wait for the parent: id maps written, pid recorded.
    let mut byte = [0u8; 1];
    loop {
        match rustix::io::read(pipes.sync_r, &mut byte) {
            Ok(1) => break,
            Ok(_) => return Err(Failure::new(Step::Sync, 0, Errno::PIPE)),
            Err(Errno::INTR) => {}
            Err(e) => return Err(Failure::new(Step::Sync, 0, e)),
        }
    }
    sys::close_raw(pipes.sync_r.as_raw_fd());
    // Into the container's v1 cgroups before anything else (and before a new cgroup namespace,
    // whose root is the cgroup its creator is in).
    for (i, tasks) in pipes.cgroup_tasks.iter().enumerate() {
        rustix::io::write(tasks, b"0").map_err(at(Step::CgroupJoin, i as u32))?;
        sys::close_raw(tasks.as_raw_fd());
    }

    if p.new_userns {
        let root_gid = Gid::from_raw(0);
        let root_uid = Uid::from_raw(0);
        rustix::thread::set_thread_res_gid(root_gid, root_gid, root_gid)
            .map_err(at(Step::UserNsRoot, 0))?;
        rustix::thread::set_thread_res_uid(root_uid, root_uid, root_uid)
            .map_err(at(Step::UserNsRoot, 1))?;
    }
    for (i, j) in p.join.iter().enumerate() {
        rustix::thread::move_into_link_name_space(j.fd.as_fd(), None)
            .map_err(at(Step::Setns, i as u32))?;
    }
    if p.unshare_flags != 0 {
        sys::unshare(p.unshare_flags).map_err(at(Step::Unshare, 0))?;
    }
    rustix::process::umask(Mode::empty());
    if p.exec_into.is_none() {
        setup_root(p)?;
    }
    set_rlimits(p)?;
    if let Some(sock) = pipes.console {
        // A pty of the container's own devpts as its controlling terminal and stdio; the
        // master goes back to the runtime (as runc's console socket does).
        let (master, slave) = sys::open_console().map_err(at(Step::Console, 0))?;
        if let Some((rows, cols)) = p.console_size {
            // SAFETY: an all-zero winsize is valid; only rows and columns are set.
            let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
            ws.ws_row = rows;
            ws.ws_col = cols;
            sys::set_window_size(slave.as_raw_fd(), &ws);
        }
        sys::send_fd(sock, master.as_fd()).map_err(at(Step::Console, 1))?;
        drop(master);
        if p.exec_into.is_none() {
            bind_console(slave.as_fd()).map_err(at(Step::Console, 3))?;
        }
        for fd in 0..3 {
            sys::dup2(slave.as_fd(), fd).map_err(at(Step::Console, 2))?;
        }
    }

    // Working directory, resolved inside the new root and entered by fd.
    let slash = rfs::open(
        c"/",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(at(Step::Cwd, 0))?;
    let cwd = openat2(slash.as_fd(), &p.cwd.rel, OFlags::PATH | OFlags::DIRECTORY)
        .map_err(at(Step::Cwd, 0))?;
    drop(slash);
    let chdir_later = match rustix::process::fchdir(&cwd) {
        Ok(()) => false,
        Err(Errno::ACCESS) | Err(Errno::PERM) => true,
        Err(e) => return Err(Failure::new(Step::Cwd, 1, e)),
    };

    if let Some(gate) = &p.gate {
        // `create`: the container is set up. A missing executable fails the create (as
        // runc's does), then EOF on the error pipe tells the caller it is created, and the
        // process waits for `start` to write a byte into the exec fifo.
        exec_check(p)?;
        sys::close_raw(pipes.err_w.as_raw_fd());
        let mut byte = [0u8; 1];
        loop {
            match rustix::io::read(gate, &mut byte) {
                Ok(1) => break,
                Err(Errno::INTR) => {}
                _ => sys::exit_now(125),
            }
        }
    }

    // Without no_new_privs, seccomp(2) needs CAP_SYS_ADMIN: install the filter while the
    // process still has it, before the credentials change (runc's order). The calls that
    // follow must then be allowed by the filter.
    if !p.no_new_privs {
        install_seccomp(p)?;
    }

    // Credentials and capabilities.
    sys::set_keepcaps(true).map_err(at(Step::KeepCaps, 0))?;
    if let Some(c) = &p.caps {
        for cap in 0..=p.last_cap {
            if c.bounding & (1u64 << cap) == 0 {
                match sys::capbset_drop(cap) {
                    Ok(()) | Err(Errno::INVAL) => {}
                    Err(e) => return Err(Failure::new(Step::Bounding, cap, e)),
                }
            }
        }
    }
    if p.setgroups_allowed {
        rustix::thread::set_thread_groups(&p.additional_gids).map_err(at(Step::Setgroups, 0))?;
    }
    let gid = Gid::from_raw(p.gid);
    rustix::thread::set_thread_res_gid(gid, gid, gid).map_err(at(Step::Setresgid, 0))?;
    let uid = Uid::from_raw(p.uid);
    rustix::thread::set_thread_res_uid(uid, uid, uid).map_err(at(Step::Setresuid, 0))?;
    if chdir_later {
        rustix::process::fchdir(&cwd).map_err(at(Step::Cwd, 1))?;
    }
    drop(cwd);
    // No way back out of the root through the working directory (CVE-2024-21626 class).
    match sys::cwd_is_reachable() {
        Ok(true) => {}
        Ok(false) => return Err(Failure::new(Step::CwdUnreachable, 0, Errno::NOENT)),
        Err(e) => return Err(Failure::new(Step::CwdUnreachable, 0, e)),
    }
    if let Some(c) = &p.caps {
        sys::capset(c.effective, c.permitted, c.inheritable).map_err(at(Step::Capset, 0))?;
        // The kernel only keeps ambient capabilities that are also permitted and inheritable;
        // like runc, the others are left out rather than failing the start.
        let ambient = c.ambient & c.permitted & c.inheritable;
        for cap in 0..=p.last_cap {
            if ambient & (1u64 << cap) != 0 {
                sys::ambient_raise(cap).map_err(at(Step::Ambient, cap))?;
            }
        }
    }
    sys::set_keepcaps(false).map_err(at(Step::KeepCaps, 1))?;
    if p.no_new_privs {
        sys::set_no_new_privs().map_err(at(Step::NoNewPrivs, 0))?;
    }
    rustix::process::umask(Mode::from_raw_mode(p.umask));
    // Changing credentials cleared the parent-death signal.
    if !p.detached {
        sys::set_pdeathsig(libc::SIGKILL).map_err(at(Step::Prctl, 0))?;
    }
    if let (Some(input), None) = (&p.stdin, pipes.console) {
        sys::dup2(input.as_fd(), 0).map_err(at(Step::Stdio, 0))?;
    }
    if let (Some((out, err)), None) = (
        p.stdio_override.as_ref().or(p.stdio.as_ref()),
        pipes.console,
    ) {
        sys::dup2(out.as_fd(), 1).map_err(at(Step::Stdio, 1))?;
        sys::dup2(err.as_fd(), 2).map_err(at(Step::Stdio, 2))?;
    }
    // Nothing of the host's beyond stdio survives exec; the error pipe stays usable until then.
    sys::cloexec_from(3 + p.preserve_fds).map_err(at(Step::CloseFds, 0))?;
    if p.no_new_privs {
        install_seccomp(p)?;
    }
    if p.init {
        become_init()?;
    }
    Err(exec(p))
}

/// `--init`: this process stays pid 1 of the container as a tiny reaper, and a forked child
/// goes on to exec the command. The reaper forwards every signal it gets to that child, reaps
/// every orphan the kernel hands it, and exits with the child's status (128 + signal when a
/// signal killed it), as docker-init (tini) does. It holds no fd but stdio once forked.
fn become_init() -> Res<()> {
    let mask = sys::block_all_signals();
    let child = match sys::clone_fork(0, None) {
        Ok(0) => {
            sys::restore_signal_mask(&mask);
            return Ok(());
        }
        Ok(pid) => pid,
        Err(e) => return Err(Failure::new(Step::Init, 0, e)),
    };
    // The command's exec (or its failure record) closes the error pipe; our copy, like every
    // other fd of the runtime's, must not keep the runtime (or its caller) waiting for EOF.
    sys::close_from(3);
    loop {
        let sig = sys::wait_signal();
        if sig == libc::SIGCHLD || sig < 0 {
            while let Some((pid, status)) = sys::reap_any() {
                if pid == child {
                    sys::exit_now(status);
                }
            }
        } else {
            sys::kill(child, sig);
        }
    }
}

fn install_seccomp(p: &Plan) -> Res<()> {
    match &p.seccomp {
        Some(f) => sys::seccomp_set_filter(&f.program, f.flags).map_err(at(Step::Seccomp, 0)),
        None => Ok(()),
    }
}

/// Whether the executable exists and may be executed (`create` checks before it waits, as
/// runc does), with exec's PATH search.
fn exec_check(p: &Plan) -> Res<()> {
    let e = &p.exec;
    let Some(name) = e.argv_c.first() else {
        return Err(Failure::new(Step::Exec, 0, Errno::INVAL));
    };
    let ok = |path: &CStr| rfs::access(path, rfs::Access::EXEC_OK);
    if e.has_slash {
        return ok(name).map_err(at(Step::Exec, 0));
    }
    let name = name.to_bytes();
    let mut buf = [0u8; 4096];
    for dir in e.search_path.split(|b| *b == b':') {
        let len = dir.len() + 1 + name.len();
        if dir.is_empty() || len + 1 > buf.len() {
            continue;
        }
        buf[..dir.len()].copy_from_slice(dir);
        buf[dir.len()] = b'/';
        buf[dir.len() + 1..len].copy_from_slice(name);
        buf[len] = 0;
        if let Ok(path) = CStr::from_bytes_with_nul(&buf[..len + 1]) {
            if ok(path).is_ok() {
                return Ok(());
            }
        }
    }
    Err(Failure::new(Step::ExecNotFound, 0, Errno::NOENT))
}

/// Exec the process, searching PATH inside the container when args[0] has no slash (in a
/// stack buffer, like execvp). Returns only the failure.
fn exec(p: &Plan) -> Failure {
    let e = &p.exec;
    let Some(name) = e.argv_c.first() else {
        return Failure::new(Step::Exec, 0, Errno::INVAL);
    };
    if e.has_slash {
        let err = sys::execve(name, &e.argv, &e.envp);
        return Failure::new(Step::Exec, 0, err);
    }
    let name = name.to_bytes();
    let mut buf = [0u8; 4096];
    let mut denied = None;
    for dir in e.search_path.split(|b| *b == b':') {
        if dir.is_empty() {
            continue;
        }
        let len = dir.len() + 1 + name.len();
        if len + 1 > buf.len() {
            continue;
        }
        buf[..dir.len()].copy_from_slice(dir);
        buf[dir.len()] = b'/';
        buf[dir.len() + 1..len].copy_from_slice(name);
        buf[len] = 0;
        let Ok(path) = CStr::from_bytes_with_nul(&buf[..len + 1]) else {
            continue;
        };
        match sys::execve(path, &e.argv, &e.envp) {
            Errno::NOENT | Errno::NOTDIR | Errno::LOOP | Errno::NAMETOOLONG => {}
            Errno::ACCESS => denied = Some(Errno::ACCESS),
            err => return Failure::new(Step::Exec, 0, err),
        }
    }
    match denied {
        Some(err) => Failure::new(Step::Exec, 0, err),
        None => Failure::new(Step::ExecNotFound, 0, Errno::NOENT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_records_round_trip() {
        let mut f = Failure::new(Step::Mount, 3, Errno::PERM);
        f.detail[..5].copy_from_slice(b"hello");
        f.detail_len = 5;
        let g = Failure::decode(&f.encode()).unwrap();
        assert_eq!(g.step, Step::Mount);
        assert_eq!(g.index, 3);
        assert_eq!(g.errno, libc::EPERM);
        assert_eq!(g.detail(), b"hello");
        for s in STEPS {
            assert_eq!(Step::from_u32(s as u32), Some(s));
        }
        assert!(Failure::decode(&[0u8; 3]).is_none());
    }

    #[test]
    fn exit_codes() {
        assert_eq!(
            Failure::new(Step::ExecNotFound, 0, Errno::NOENT).exit_code(),
            127
        );
        assert_eq!(Failure::new(Step::Exec, 0, Errno::NOENT).exit_code(), 127);
        assert_eq!(Failure::new(Step::Exec, 0, Errno::ACCESS).exit_code(), 126);
        assert_eq!(Failure::new(Step::Exec, 0, Errno::NOEXEC).exit_code(), 126);
        assert_eq!(Failure::new(Step::Mount, 0, Errno::PERM).exit_code(), 125);
    }
}

//! overlayfs mounts for image stores, and unmounting.
//!
//! "new": fsopen("overlay") with one `lowerdir+` per layer (kernel >= 6.8), so there is no
//! option-string limit and no escaping. "legacy": mount(2) with a classic option string; to stay
//! under the one-page limit with many layers it names each lower by a short symlink in
//! `links_dir` (as Docker's overlay2 does) and mounts from a thread whose working directory is
//! `links_dir`, with relative lowerdir entries.

use std::ffi::{CStr, CString};
use std::io::Write as _;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use rustix::fs::{Mode, OFlags, CWD};
use rustix::io::Errno;
use rustix::mount::{
    self as rmount, FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags,
    UnmountFlags,
};
use sha2::{Digest, Sha256};

use super::{errno_text, Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Auto,
    New,
    Legacy,
}

impl Method {
    pub fn from_name(s: &str) -> Option<Method> {
        Some(match s {
            "auto" => Method::Auto,
            "new" => Method::New,
            "legacy" => Method::Legacy,
            _ => return None,
        })
    }
}

/// Whether the kernel accepts `lowerdir+`: 0 unknown, 1 yes, 2 no.
static NEW_API: AtomicU8 = AtomicU8::new(0);

/// Longest option string mount(2) accepts (one page, NUL included).
const MAX_DATA: usize = 4095;

/// An I/O error of std's as the runtime's: "{what}: {strerror}".
fn io_err(e: std::io::Error, what: impl std::fmt::Display) -> Error {
    Error::Os {
        errno: e.raw_os_error().unwrap_or(libc::EIO),
        msg: format!("{what}: {}", super::strerror(&e)),
    }
}

fn os_err(errno: Errno, what: impl std::fmt::Display, detail: &str) -> Error {
    let text = errno_text(errno.raw_os_error());
    let msg = if detail.is_empty() {
        format!("{what}: {text}")
    } else {
        format!("{what}: {text} ({detail})")
    };
    Error::Os {
        errno: errno.raw_os_error(),
        msg,
    }
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::Value(format!("{}: path contains a NUL byte", p.display())))
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(|e| Error::Os {
        errno: e.raw_os_error().unwrap_or(libc::EINVAL),
        msg: format!("{}: {}", p.display(), super::strerror(&e)),
    })
}

/// The last error (else any) message of a filesystem context, without its "e " prefix.
fn fs_log(fs: BorrowedFd<'_>) -> String {
    let mut found = String::new();
    let mut buf = [0u8; 512];
    for _ in 0..32 {
        match rustix::io::read(fs, &mut buf) {
            Ok(n) if n > 0 => {
                let msg = String::from_utf8_lossy(&buf[..n]);
                let is_error = msg.starts_with("e ");
                if is_error || found.is_empty() {
                    found = msg.get(2..).unwrap_or("").trim().to_string();
                }
            }
            _ => break,
        }
    }
    found
}

/// Set a path-valued overlay parameter. fsconfig takes string values of at most 256 bytes: a
/// longer path goes as an fd (FSCONFIG_SET_FD, Linux 6.13), else as the /proc/self/fd link of
/// an O_PATH fd (resolved while fsconfig runs, so the fd may close right after).
fn fsconfig_path(fs: BorrowedFd<'_>, key: &CStr, p: &Path) -> std::result::Result<(), Errno> {
    let c = CString::new(p.as_os_str().as_bytes()).map_err(|_| Errno::INVAL)?;
    if c.as_bytes().len() < 256 {
        return rmount::fsconfig_set_string(fs, key, c.as_c_str());
    }
    let fd = rustix::fs::open(
        c.as_c_str(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    match rmount::fsconfig_set_fd(fs, key, &fd) {
        Err(Errno::INVAL) => {}
        r => return r,
    }
    let mut link = [0u8; 40];
    let mut w = &mut link[..];
    write!(w, "/proc/self/fd/{}\0", fd.as_raw_fd()).map_err(|_| Errno::INVAL)?;
    let link = CStr::from_bytes_until_nul(&link).map_err(|_| Errno::INVAL)?;
    rmount::fsconfig_set_string(fs, key, link)
}

enum NewError {
    /// The kernel does not know fsopen or lowerdir+.
    Unsupported,
    Failed(Error),
}

fn mount_new(
    lowers: &[PathBuf],
    target: &Path,
    upper: Option<&Path>,
    work: Option<&Path>,
    volatile: bool,
    what: &str,
) -> std::result::Result<(), NewError> {
    let fs = match rmount::fsopen(c"overlay", FsOpenFlags::FSOPEN_CLOEXEC) {
        Ok(fd) => fd,
        Err(Errno::NOSYS) => return Err(NewError::Unsupported),
        Err(e) => return Err(NewError::Failed(os_err(e, format!("fsopen({what})"), ""))),
    };
    let failed = |e: Errno, step: String| NewError::Failed(os_err(e, step, &fs_log(fs.as_fd())));
    for (i, lower) in lowers.iter().enumerate() {
        if let Err(e) = fsconfig_path(fs.as_fd(), c"lowerdir+", lower) {
            let log = fs_log(fs.as_fd());
            if i == 0 && e == Errno::INVAL && log.contains("nknown parameter") {
                return Err(NewError::Unsupported);
            }
            return Err(NewError::Failed(os_err(
                e,
                format!("{what}: lower layer {}", lower.display()),
                &log,
            )));
        }
    }
    if let (Some(upper), Some(work)) = (upper, work) {
        fsconfig_path(fs.as_fd(), c"upperdir", upper)
            .map_err(|e| failed(e, format!("{what}: upperdir {}", upper.display())))?;
        fsconfig_path(fs.as_fd(), c"workdir", work)
            .map_err(|e| failed(e, format!("{what}: workdir {}", work.display())))?;
        if volatile {
            rmount::fsconfig_set_flag(fs.as_fd(), c"volatile")
                .map_err(|e| failed(e, format!("{what}: volatile")))?;
        }
    }
    rmount::fsconfig_create(&fs).map_err(|e| failed(e, what.to_string()))?;
    let attrs = if upper.is_none() {
        MountAttrFlags::MOUNT_ATTR_RDONLY
    } else {
        MountAttrFlags::empty()
    };
    let mnt = rmount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
        .map_err(|e| failed(e, what.to_string()))?;
    let t = cpath(target).map_err(NewError::Failed)?;
    rmount::move_mount(
        &mnt,
        c"",
        CWD,
        t.as_c_str(),
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| NewError::Failed(os_err(e, what, "")))?;
    Ok(())
}

/// The stable short name of a lower directory in `links_dir`.
pub fn short_id(lower: &Path) -> String {
    let digest = Sha256::digest(lower.as_os_str().as_bytes());
    hex::encode(&digest[..5])
}

/// Make `links_dir/id` a symlink to `lower`, replacing a stale one atomically.
fn ensure_link(links_dir: &Path, id: &str, lower: &Path) -> Result<()> {
    let link = links_dir.join(id);
    match std::fs::read_link(&link) {
        Ok(t) if t == lower => return Ok(()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match std::os::unix::fs::symlink(lower, &link) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if std::fs::read_link(&link).is_ok_and(|t| t == lower) {
                        return Ok(());
                    }
                }
                Err(e) => return Err(io_err(e, format!("symlink {}", link.display()))),
            }
        }
        Err(e) => return Err(io_err(e, format!("readlink {}", link.display()))),
    }
    let tmp = links_dir.join(format!(".{id}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(lower, &tmp)
        .map_err(|e| io_err(e, format!("symlink {}", tmp.display())))?;
    std::fs::rename(&tmp, &link).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(e, format!("rename {}", link.display()))
    })
}

fn mount_legacy(
    lowers: &[PathBuf],
    target: &Path,
    upper: Option<&Path>,
    work: Option<&Path>,
    links_dir: &Path,
    volatile: bool,
    what: &str,
) -> Result<()> {
    std::fs::create_dir_all(links_dir)
        .map_err(|e| io_err(e, format!("create {}", links_dir.display())))?;
    let mut data = String::from("lowerdir=");
    for (i, lower) in lowers.iter().enumerate() {
        let id = short_id(lower);
        ensure_link(links_dir, &id, lower)?;
        if i > 0 {
            data.push(':');
        }
        data.push_str(&id);
    }
    if let (Some(upper), Some(work)) = (upper, work) {
        for (name, p) in [("upperdir", upper), ("workdir", work)] {
            let s = p.to_str().filter(|s| !s.contains(',') && !s.contains(':'));
            let s = s.ok_or_else(|| {
                Error::Value(format!(
                    "{name} {}: the legacy method needs a UTF-8 path without ',' or ':'",
                    p.display()
                ))
            })?;
            data.push_str(&format!(",{name}={s}"));
        }
        if volatile {
            data.push_str(",volatile");
        }
    }
    if data.len() > MAX_DATA {
        return Err(Error::Os {
            errno: libc::E2BIG,
            msg: format!(
                "{what}: the option string is {} bytes, over the {MAX_DATA}-byte limit even with short names",
                data.len()
            ),
        });
    }
    let flags = if upper.is_none() {
        MountFlags::RDONLY
    } else {
        MountFlags::empty()
    };
    let data = CString::new(data).map_err(|_| Error::Value("NUL in options".into()))?;
    let target_c = cpath(target)?;
    let links_c = cpath(links_dir)?;
    // A thread of its own with a private cwd: unshare(CLONE_FS), chdir, mount.
    let res = std::thread::scope(|s| {
        s.spawn(|| -> std::result::Result<(), (Errno, &'static str)> {
            super::sys::unshare(libc::CLONE_FS as u64).map_err(|e| (e, "unshare(CLONE_FS)"))?;
            rustix::process::chdir(links_c.as_c_str()).map_err(|e| (e, "chdir"))?;
            rmount::mount(
                c"overlay",
                target_c.as_c_str(),
                c"overlay",
                flags,
                Some(data.as_c_str()),
            )
            .map_err(|e| (e, "mount"))
        })
        .join()
    });
    match res {
        Ok(Ok(())) => Ok(()),
        Ok(Err((e, "mount"))) => Err(os_err(e, what, "")),
        Ok(Err((e, step))) => Err(os_err(
            e,
            format!("{what}: {step} {}", links_dir.display()),
            "",
        )),
        Err(_) => Err(Error::Os {
            errno: libc::EIO,
            msg: format!("{what}: the mount thread panicked"),
        }),
    }
}

/// Mount overlayfs at `target`; returns the method used ("new" or "legacy").
pub fn mount_overlay(
    lowers: &[PathBuf],
    target: &Path,
    upper: Option<&Path>,
    work: Option<&Path>,
    method: Method,
    links_dir: Option<&Path>,
) -> Result<&'static str> {
    mount_overlay_opts(lowers, target, upper, work, method, links_dir, false)
}

/// `mount_overlay` with `volatile`: the upper dir is never synced (no syncfs at unmount, ~5-15 ms
/// saved per container), for uppers thrown away afterwards (`run --rm`). Overlayfs then refuses
/// to mount that upper again (work/work/incompat/volatile), which a removed container never
/// asks. A kernel without the option (before 5.10) mounts without it.
pub fn mount_overlay_opts(
    lowers: &[PathBuf],
    target: &Path,
    upper: Option<&Path>,
    work: Option<&Path>,
    method: Method,
    links_dir: Option<&Path>,
    volatile: bool,
) -> Result<&'static str> {
    let volatile = volatile && upper.is_some();
    if lowers.is_empty() {
        return Err(Error::Value(
            "mount_overlay: lowers must not be empty".into(),
        ));
    }
    if upper.is_none() && lowers.len() < 2 {
        return Err(Error::Value(
            "mount_overlay: without upper, overlayfs needs at least two lowers".into(),
        ));
    }
    if upper.is_some() != work.is_some() {
        return Err(Error::Value(
            "mount_overlay: upper and work go together".into(),
        ));
    }
    if method == Method::Legacy && links_dir.is_none() {
        return Err(Error::Value(
            "mount_overlay: the legacy method needs links_dir".into(),
        ));
    }
    let lowers: Vec<PathBuf> = lowers.iter().map(|l| absolute(l)).collect::<Result<_>>()?;
    let target = absolute(target)?;
    let upper = upper.map(absolute).transpose()?;
    let work = work.map(absolute).transpose()?;
    let what = format!("mount overlay on {}", target.display());

    let try_new = match method {
        Method::New => true,
        Method::Legacy => false,
        Method::Auto => NEW_API.load(Ordering::Relaxed) != 2,
    };
    if try_new {
        let new = mount_new(
            &lowers,
            &target,
            upper.as_deref(),
            work.as_deref(),
            volatile,
            &what,
        );
        match new {
            Ok(()) => {
                NEW_API.store(1, Ordering::Relaxed);
                return Ok("new");
            }
            Err(NewError::Failed(e)) => return Err(e),
            Err(NewError::Unsupported) => {
                NEW_API.store(2, Ordering::Relaxed);
                if method == Method::New {
                    return Err(Error::Os {
                        errno: libc::EINVAL,
                        msg: format!(
                            "{what}: this kernel does not accept lowerdir+ (needs Linux 6.8)"
                        ),
                    });
                }
            }
        }
    }
    let Some(links_dir) = links_dir else {
        return Err(Error::Value(format!(
            "{what}: the kernel needs the legacy method, which needs links_dir"
        )));
    };
    let links_dir = absolute(links_dir)?;
    let legacy = |volatile| {
        mount_legacy(
            &lowers,
            &target,
            upper.as_deref(),
            work.as_deref(),
            &links_dir,
            volatile,
            &what,
        )
    };
    match legacy(volatile) {
        // Before 5.10 `volatile` is an unknown option: mount the durable way.
        Err(Error::Os { errno, .. }) if volatile && errno == libc::EINVAL => legacy(false)?,
        other => other?,
    }
    Ok("legacy")
}

/// `umount2(target, MNT_DETACH if detach else 0)`; not mounted (EINVAL, ENOENT) is fine.
pub fn unmount(target: &Path, detach: bool) -> Result<()> {
    let flags = if detach {
        UnmountFlags::DETACH
    } else {
        UnmountFlags::empty()
    };
    let t = cpath(target)?;
    match rmount::unmount(t.as_c_str(), flags) {
        Ok(()) | Err(Errno::INVAL) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(os_err(e, format!("unmount {}", target.display()), "")),
    }
}

const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Make `dir` (created if missing) a tmpfs unless it already is on one: the runtime
/// directories of containers (bundle, /etc files, pid file, the root's mount point) are made and
/// removed with every container, which on a disk filesystem costs an inode each. /run is a tmpfs
/// on most systems and then nothing is mounted. One mounter at a time (an flock on a file
/// beside `dir`); returns whether this call mounted.
pub fn ensure_tmpfs(dir: &Path) -> Result<bool> {
    let is_tmpfs = || -> Result<bool> {
        let st = rustix::fs::statfs(dir)
            .map_err(|e| os_err(e, format!("statfs {}", dir.display()), ""))?;
        Ok(st.f_type as i64 == TMPFS_MAGIC)
    };
    std::fs::create_dir_all(dir).map_err(|e| io_err(e, format!("create {}", dir.display())))?;
    if is_tmpfs()? {
        return Ok(false);
    }
    let lock_path = dir.with_extension("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| io_err(e, format!("open {}", lock_path.display())))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| os_err(e, format!("lock {}", lock_path.display()), ""))?;
    if is_tmpfs()? {
        return Ok(false); // another process mounted it meanwhile
    }
    let d = cpath(dir)?;
    rmount::mount(
        c"tmpfs",
        d.as_c_str(),
        c"tmpfs",
        rmount::MountFlags::empty(),
        Some(c"mode=0755"),
    )
    .map_err(|e| os_err(e, format!("mount a tmpfs on {}", dir.display()), ""))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_are_stable_and_short() {
        let a = short_id(Path::new("/var/lib/x/layers/abc"));
        assert_eq!(a.len(), 10);
        assert_eq!(a, short_id(Path::new("/var/lib/x/layers/abc")));
        assert_ne!(a, short_id(Path::new("/var/lib/x/layers/abd")));
    }

    #[test]
    fn argument_errors() {
        let l = vec![PathBuf::from("/tmp")];
        assert!(matches!(
            mount_overlay(&[], Path::new("/x"), None, None, Method::New, None),
            Err(Error::Value(_))
        ));
        assert!(matches!(
            mount_overlay(
                &l,
                Path::new("/x"),
                Some(Path::new("/u")),
                None,
                Method::New,
                None
            ),
            Err(Error::Value(_))
        ));
        assert!(matches!(
            mount_overlay(&l, Path::new("/x"), None, None, Method::Legacy, None),
            Err(Error::Value(_))
        ));
    }

    #[test]
    fn links_are_created_and_repaired() {
        let d = tempfile::tempdir().unwrap();
        let lower = d.path().join("lower");
        std::fs::create_dir(&lower).unwrap();
        let links = d.path().join("l");
        std::fs::create_dir(&links).unwrap();
        let id = short_id(&lower);
        ensure_link(&links, &id, &lower).unwrap();
        assert_eq!(std::fs::read_link(links.join(&id)).unwrap(), lower);
        std::fs::remove_file(links.join(&id)).unwrap();
        std::os::unix::fs::symlink("/elsewhere", links.join(&id)).unwrap();
        ensure_link(&links, &id, &lower).unwrap();
        assert_eq!(std::fs::read_link(links.join(&id)).unwrap(), lower);
    }
}

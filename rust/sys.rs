//! Small safe wrappers over the Linux syscalls the layer code needs beyond what rustix offers
//! directly (fchmodat2, fd-relative xattrs on O_PATH fds, borrowing a caller's raw fd) plus a few
//! process facts (euid, umask). All `unsafe` in the crate lives in this file.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Resolution flags for every path looked up under an extraction root: symlinks are resolved as
/// if the root were `/`, and /proc magic links are refused.
pub const IN_ROOT: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

/// Open `path` (relative, may be empty for the root itself) under `root` with openat2 and
/// RESOLVE_IN_ROOT, so that no symlink or `..` can leave `root`.
pub fn open_in_root(root: BorrowedFd<'_>, path: &[u8], flags: OFlags) -> io::Result<OwnedFd> {
    let path: &[u8] = if path.is_empty() { b"." } else { path };
    loop {
        match rfs::openat2(root, path, flags | OFlags::CLOEXEC, Mode::empty(), IN_ROOT) {
            // openat2 may fail with EAGAIN under RESOLVE_IN_ROOT when a rename raced the lookup.
            Err(Errno::AGAIN) | Err(Errno::INTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

/// `fchmodat2(dirfd, name, mode, AT_SYMLINK_NOFOLLOW)`, or with an empty name
/// `fchmodat2(dirfd, "", mode, AT_EMPTY_PATH)` to chmod the (possibly O_PATH) fd itself. Falls
/// back to an O_PATH|O_NOFOLLOW open plus chmod through /proc/self/fd on kernels before 6.6.
/// Refuses to change the mode of a symlink.
pub fn chmod_nofollow(dirfd: BorrowedFd<'_>, name: &[u8], mode: u32) -> io::Result<()> {
    let cname = cstring(name)?;
    let flags = if name.is_empty() {
        libc::AT_EMPTY_PATH
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    // SAFETY: plain syscall with a valid fd, a NUL-terminated path and integer arguments.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            dirfd.as_raw_fd(),
            cname.as_ptr(),
            mode as libc::c_uint,
            flags as libc::c_uint,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        // EPERM: some seccomp filters refuse unknown syscalls with EPERM instead of ENOSYS.
        Some(libc::ENOSYS) | Some(libc::EPERM) => {
            let fd = if name.is_empty() {
                rustix::io::fcntl_dupfd_cloexec(dirfd, 0)?
            } else {
                rfs::openat(
                    dirfd,
                    name,
                    OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?
            };
            let st = rfs::fstat(&fd)?;
            if rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::Symlink {
                return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
            }
            rfs::chmod(proc_fd_path(fd.as_fd()).as_str(), Mode::from_raw_mode(mode))?;
            Ok(())
        }
        _ => Err(err),
    }
}

/// Set an xattr on whatever an fd refers to, including O_PATH fds of fifos and device nodes
/// (through the /proc/self/fd magic link, which cannot be redirected to another file).
pub fn set_xattr_fd(
    fd: BorrowedFd<'_>,
    name: &[u8],
    value: &[u8],
    is_opath: bool,
) -> io::Result<()> {
    let cname = cstring(name)?;
    if !is_opath {
        return rfs::fsetxattr(fd, cname.as_c_str(), value, rfs::XattrFlags::empty())
            .map_err(io::Error::from);
    }
    rfs::setxattr(
        proc_fd_path(fd).as_str(),
        cname.as_c_str(),
        value,
        rfs::XattrFlags::empty(),
    )
    .map_err(io::Error::from)
}

/// Read one xattr of an open fd; `Ok(None)` when it is absent or xattrs are unsupported.
pub fn get_xattr_fd(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    loop {
        match rfs::fgetxattr(fd, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(Errno::NODATA) | Err(Errno::NOTSUP) => return Ok(None),
            Err(Errno::RANGE) if buf.len() < 1 << 20 => {
                let len = buf.len() * 4;
                buf.resize(len, 0);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Read one xattr of `name` inside the directory `dirfd` without following a final symlink.
/// Goes through the /proc/self/fd link of the directory, so no file needs to be opened.
pub fn get_xattr_at(
    dirfd: BorrowedFd<'_>,
    name: &[u8],
    attr: &CStr,
) -> io::Result<Option<Vec<u8>>> {
    let mut path = proc_fd_path(dirfd).into_bytes();
    path.push(b'/');
    path.extend_from_slice(name);
    let mut buf = vec![0u8; 256];
    loop {
        match rfs::lgetxattr(&path[..], attr, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(Errno::NODATA) | Err(Errno::NOTSUP) => return Ok(None),
            Err(Errno::RANGE) if buf.len() < 1 << 20 => {
                let len = buf.len() * 4;
                buf.resize(len, 0);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Duplicate a caller-owned raw fd (close-on-exec), so reading never closes or moves theirs.
pub fn dup_raw_fd(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: the fd is only borrowed for the duration of the fcntl call; an fd that is not open
    // makes fcntl fail with EBADF rather than touching memory.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    Ok(rustix::io::fcntl_dupfd_cloexec(borrowed, 0)?)
}

/// `chownat(dirfd, name, uid, gid, AT_SYMLINK_NOFOLLOW)`, or the fd itself when `name` is empty.
pub fn chown_nofollow(dirfd: BorrowedFd<'_>, name: &[u8], uid: u32, gid: u32) -> io::Result<()> {
    let flags = if name.is_empty() {
        AtFlags::EMPTY_PATH
    } else {
        AtFlags::SYMLINK_NOFOLLOW
    };
    rfs::chownat(
        dirfd,
        name,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        flags,
    )
    .map_err(io::Error::from)
}

/// The process umask, read from /proc/self/status (reading it with umask(2) would change it
/// for every thread for a moment). Defaults to 022 when it cannot be read.
pub fn current_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// Effective uid and gid of the calling thread.
pub fn effective_ids() -> (u32, u32) {
    (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    )
}

fn proc_fd_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn cstring(name: &[u8]) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umask_is_plausible() {
        assert!(current_umask() <= 0o777);
    }

    #[test]
    fn chmod_nofollow_changes_mode_and_refuses_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        std::os::unix::fs::symlink("f", dir.path().join("l")).unwrap();
        let dfd = rfs::open(dir.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        chmod_nofollow(dfd.as_fd(), b"f", 0o640).unwrap();
        let st = rfs::statat(&dfd, "f", AtFlags::SYMLINK_NOFOLLOW).unwrap();
        assert_eq!(st.st_mode & 0o7777, 0o640);
        assert!(chmod_nofollow(dfd.as_fd(), b"l", 0o600).is_err());
        let st = rfs::statat(&dfd, "f", AtFlags::SYMLINK_NOFOLLOW).unwrap();
        assert_eq!(st.st_mode & 0o7777, 0o640);
    }
}

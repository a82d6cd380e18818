//! The runtime's side of a container's terminal (`-t`): copy between the caller's terminal
//! (or fds) and the pty master the container's init sent back, in raw mode, passing the
//! window size on, until the container process has exited and its output is drained.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::process::Pid;

use super::sys;

/// Restores the terminal settings on drop.
struct RawGuard {
    fd: i32,
    saved: libc::termios,
}

impl Drop for RawGuard {
    fn drop(&mut self) {
        sys::restore_termios(self.fd, &self.saved);
    }
}

/// Proxy until `pid` exits: `master` → `out`, and with `stdin` that fd → `master`.
pub fn proxy(
    master: &OwnedFd,
    pid: Pid,
    stdin: Option<i32>,
    out: i32,
    mut log: Option<&mut crate::logfile::LogWriter>,
) {
    // SAFETY: the caller keeps these fds open for the duration of the call.
    let out_fd = unsafe { BorrowedFd::borrow_raw(out) };
    let in_fd = stdin.map(|fd| unsafe { BorrowedFd::borrow_raw(fd) });
    let size_source = [stdin.unwrap_or(-1), out]
        .into_iter()
        .find(|fd| *fd >= 0 && sys::window_size(*fd).is_some());
    let mut last_size = size_source.and_then(sys::window_size);
    if let Some(ws) = &last_size {
        sys::set_window_size(master.as_raw_fd(), ws);
    }
    // Raw output (no second \n -> \r\n over the container's own), and raw input for -i;
    // dropped in reverse order, so a terminal that is both gets its first settings back.
    let _raw_out = sys::make_raw(out).map(|saved| RawGuard { fd: out, saved });
    let _raw_in = stdin.and_then(|fd| sys::make_raw(fd).map(|saved| RawGuard { fd, saved }));
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok();
    let mut stdin_open = in_fd.is_some();
    let mut exited = false;
    let mut buf = [0u8; 16 * 1024];
    let tick = Timespec {
        tv_sec: 0,
        tv_nsec: 200_000_000,
    };
    let drain = Timespec {
        tv_sec: 0,
        tv_nsec: 50_000_000,
    };
    loop {
        let mut fds = vec![PollFd::new(master, PollFlags::IN)];
        if stdin_open && !exited {
            if let Some(fd) = in_fd.as_ref() {
                fds.push(PollFd::new(fd, PollFlags::IN));
            }
        }
        let pidfd_at = fds.len();
        if let (false, Some(p)) = (exited, &pidfd) {
            fds.push(PollFd::new(p, PollFlags::IN));
        }
        let n = match poll(&mut fds, Some(if exited { &drain } else { &tick })) {
            Ok(n) => n,
            Err(Errno::INTR) => continue,
            Err(_) => return,
        };
        let master_ready = !fds[0].revents().is_empty();
        let stdin_ready = fds.len() > 1 && pidfd_at > 1 && !fds[1].revents().is_empty();
        let pid_ready = fds.len() > pidfd_at && !fds[pidfd_at].revents().is_empty();
        drop(fds);
        if n == 0 {
            if exited {
                return; // drained: nothing more within the drain timeout
            }
            if pidfd.is_none() && super::has_exited(pid) {
                exited = true;
            }
            if let Some(src) = size_source {
                let now = sys::window_size(src);
                if let (Some(ws), Some(old)) = (&now, &last_size) {
                    if (ws.ws_row, ws.ws_col) != (old.ws_row, old.ws_col) {
                        sys::set_window_size(master.as_raw_fd(), ws);
                    }
                }
                last_size = now;
            }
            continue;
        }
        if master_ready {
            match rustix::io::read(master, &mut buf) {
                Ok(0) | Err(Errno::IO) => return, // every slave closed
                Ok(k) => {
                    if let Some(l) = log.as_deref_mut() {
                        l.feed(0, &buf[..k]);
                    }
                    if !crate::logfile::write_all(out_fd, &buf[..k]) {
                        return;
                    }
                }
                Err(Errno::INTR) | Err(Errno::AGAIN) => {}
                Err(_) => return,
            }
        }
        if stdin_ready {
            if let Some(fd) = in_fd {
                match rustix::io::read(fd, &mut buf) {
                    Ok(0) | Err(Errno::BADF) | Err(Errno::IO) => {
                        stdin_open = false;
                        // End of input: the pty's EOF character, as a terminal user types it.
                        crate::logfile::write_all(master.as_fd(), &[4u8]);
                    }
                    Ok(k) => {
                        crate::logfile::write_all(master.as_fd(), &buf[..k]);
                    }
                    Err(_) => {}
                }
            }
        }
        if pid_ready {
            exited = true;
        }
    }
}

//! Container output into Docker's json-file log: [`LogWriter`] turns stdout/stderr bytes into
//! `{"log","stream","time"}` records (whole lines, or 16 KiB pieces of longer ones, one write
//! each), optionally passing the raw bytes on to the caller's fds as well (a foreground run);
//! [`copy_output`] copies a container's pipes (or pty) until it has exited and drained.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::process::Pid;

use crate::timefmt;

pub const LINE_MAX: usize = 16 * 1024;
const STREAMS: [&str; 2] = ["stdout", "stderr"];

pub struct LogWriter {
    file: Option<File>,
    pending: [Vec<u8>; 2],
    /// Also write the raw bytes of each stream here (the caller's stdout and stderr).
    tee: [Option<i32>; 2],
}

impl LogWriter {
    pub fn new(path: Option<&Path>) -> std::io::Result<LogWriter> {
        let file = match path {
            Some(p) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
            None => None,
        };
        Ok(LogWriter {
            file,
            pending: [Vec::new(), Vec::new()],
            tee: [None, None],
        })
    }

    pub fn with_tee(mut self, out: i32, err: i32) -> LogWriter {
        self.tee = [Some(out), Some(err)];
        self
    }

    pub fn feed(&mut self, stream: usize, mut data: &[u8]) {
        if let Some(fd) = self.tee[stream] {
            // SAFETY: the caller keeps its stdio fds open while the container runs.
            write_all(unsafe { BorrowedFd::borrow_raw(fd) }, data);
        }
        while !data.is_empty() {
            let room = LINE_MAX - self.pending[stream].len();
            let take = match data.iter().position(|&b| b == b'\n') {
                Some(i) if i < room => i + 1,
                _ => data.len().min(room),
            };
            self.pending[stream].extend_from_slice(&data[..take]);
            data = &data[take..];
            let buf = &self.pending[stream];
            if buf.last() == Some(&b'\n') || buf.len() >= LINE_MAX {
                self.flush(stream);
            }
        }
    }

    pub fn flush(&mut self, stream: usize) {
        if self.pending[stream].is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.pending[stream]);
        if let Some(f) = self.file.as_mut() {
            let rec = serde_json::json!({
                "log": String::from_utf8_lossy(&line),
                "stream": STREAMS[stream],
                "time": timefmt::now(),
            });
            let mut out = rec.to_string().into_bytes();
            out.push(b'\n');
            if let Err(e) = f.write_all(&out) {
                eprintln!("pyrun: write log: {e}");
            }
        }
        // Keep the allocation small between lines.
        self.pending[stream] = Vec::new();
    }
}

/// Write all of `data` (retrying EINTR/EAGAIN); false when the fd refuses more.
pub fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(0) => return false,
            Ok(n) => data = &data[n..],
            Err(Errno::INTR) | Err(Errno::AGAIN) => {}
            Err(_) => return false,
        }
    }
    true
}

/// `attach`: clients on the container's attach socket get its output (raw for a terminal,
/// else in Docker's multiplexed frames: [stream, 0, 0, 0, length u32 BE] + bytes) and, when the
/// container keeps stdin open, what they send goes to its stdin (or its pty).
pub struct Attach {
    pub listener: std::os::unix::net::UnixListener,
    pub clients: Vec<std::os::unix::net::UnixStream>,
    /// Where client input goes: the stdin pipe's write end, or a dup of the pty master.
    pub stdin: Option<OwnedFd>,
    pub tty: bool,
}

impl Attach {
    fn accept(&mut self) {
        while let Ok((c, _)) = self.listener.accept() {
            let _ = c.set_nonblocking(true);
            self.clients.push(c);
        }
    }

    fn broadcast(&mut self, stream: usize, data: &[u8]) {
        if self.clients.is_empty() {
            return;
        }
        let mut frame = Vec::with_capacity(data.len() + 8);
        if !self.tty {
            frame.push(stream as u8 + 1);
            frame.extend_from_slice(&[0, 0, 0]);
            frame.extend_from_slice(&(data.len() as u32).to_be_bytes());
        }
        frame.extend_from_slice(data);
        // A client that cannot keep up (or went away) is dropped: the container never waits.
        self.clients.retain_mut(|c| {
            let mut rest = &frame[..];
            while !rest.is_empty() {
                match std::io::Write::write(c, rest) {
                    Ok(0) => return false,
                    Ok(n) => rest = &rest[n..],
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
            true
        });
    }

    /// Input from client `i` to the container's stdin; false when the client is gone.
    fn input(&mut self, i: usize) -> bool {
        let mut buf = [0u8; 4096];
        match std::io::Read::read(&mut self.clients[i], &mut buf) {
            Ok(0) => false,
            Ok(n) => {
                if let Some(fd) = &self.stdin {
                    write_all(fd.as_fd(), &buf[..n]);
                }
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => true,
            Err(_) => false,
        }
    }
}

enum Woke {
    Data,
    Exited,
    Timeout,
}

/// Wait up to `timeout` for output or the exit; read what is there into the log. A pipe at
/// EOF (or a pty whose slaves are all closed: EIO) is dropped.
fn pump(
    pipes: &mut [Option<OwnedFd>; 2],
    log: &mut LogWriter,
    pidfd: Option<&OwnedFd>,
    timeout: Option<&Timespec>,
    mut attach: Option<&mut Attach>,
) -> Woke {
    let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(3);
    let mut which: Vec<usize> = Vec::with_capacity(3);
    for (i, p) in pipes.iter().enumerate() {
        if let Some(fd) = p {
            fds.push(PollFd::new(fd, PollFlags::IN));
            which.push(i);
        }
    }
    if let Some(fd) = pidfd {
        fds.push(PollFd::new(fd, PollFlags::IN));
        which.push(2);
    }
    if let Some(a) = attach.as_deref() {
        fds.push(PollFd::new(&a.listener, PollFlags::IN));
        which.push(3);
        for (k, c) in a.clients.iter().enumerate() {
            fds.push(PollFd::new(c, PollFlags::IN));
            which.push(4 + k);
        }
    }
    if fds.is_empty() {
        // Nothing to wait on (no pidfd, pipes closed): do not spin.
        std::thread::sleep(std::time::Duration::from_millis(100));
        return Woke::Timeout;
    }
    match poll(&mut fds, timeout) {
        Ok(0) => return Woke::Timeout,
        Ok(_) => {}
        Err(_) => return Woke::Data, // EINTR: look again
    }
    let ready: Vec<(usize, PollFlags)> = fds
        .iter()
        .zip(which.iter())
        .map(|(f, w)| (*w, f.revents()))
        .collect();
    drop(fds);
    let mut woke = Woke::Data;
    let mut buf = [0u8; 16 * 1024];
    let mut gone: Vec<usize> = Vec::new();
    for (w, rev) in ready {
        if rev.is_empty() {
            continue;
        }
        if w == 2 {
            woke = Woke::Exited;
            continue;
        }
        if w >= 3 {
            if let Some(a) = attach.as_deref_mut() {
                if w == 3 {
                    a.accept();
                } else if !a.input(w - 4) {
                    gone.push(w - 4);
                }
            }
            continue;
        }
        let Some(fd) = pipes[w].as_ref() else {
            continue;
        };
        match rustix::io::read(fd, &mut buf) {
            Ok(0) => {
                log.flush(w);
                pipes[w] = None;
            }
            Ok(n) => {
                log.feed(w, &buf[..n]);
                if let Some(a) = attach.as_deref_mut() {
                    a.broadcast(w, &buf[..n]);
                }
            }
            Err(Errno::INTR) | Err(Errno::AGAIN) => {}
            Err(_) => {
                log.flush(w);
                pipes[w] = None;
            }
        }
    }
    if let Some(a) = attach {
        for k in gone.into_iter().rev() {
            if k < a.clients.len() {
                a.clients.remove(k);
            }
        }
    }
    woke
}

/// Copy the container's output (stdout and stderr pipes, or `[pty master, None]`) into `log`
/// until `pid` has exited (not reaped), then the rest: until EOF, or 500 ms without a byte (a
/// process outside the container's pid namespace may hold a pipe open).
pub fn copy_output(
    mut pipes: [Option<OwnedFd>; 2],
    log: &mut LogWriter,
    pid: Pid,
    mut attach: Option<&mut Attach>,
) {
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok();
    let tick = Timespec {
        tv_sec: 0,
        tv_nsec: 100_000_000,
    };
    loop {
        let timeout = if pidfd.is_some() { None } else { Some(&tick) };
        match pump(
            &mut pipes,
            log,
            pidfd.as_ref(),
            timeout,
            attach.as_deref_mut(),
        ) {
            Woke::Exited => break,
            Woke::Timeout if pidfd.is_none() && crate::runtime::has_exited(pid) => break,
            _ => {}
        }
    }
    crate::runtime::wait_exited(pid);
    let quiet = Timespec {
        tv_sec: 0,
        tv_nsec: 500_000_000,
    };
    while pipes.iter().any(Option::is_some) {
        if let Woke::Timeout = pump(&mut pipes, log, None, Some(&quiet), attach.as_deref_mut()) {
            break;
        }
    }
    log.flush(0);
    log.flush(1);
    if let Some(a) = attach {
        a.clients.clear(); // EOF for every attached client: this run is over
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_split_at_newlines_and_16k() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut w = LogWriter::new(Some(&path)).unwrap();
        w.feed(0, b"one\ntw");
        w.feed(1, b"err\n");
        w.feed(0, b"o\n");
        w.feed(0, &vec![b'x'; LINE_MAX + 5]);
        w.feed(0, b"\xff tail");
        w.flush(0);
        let text = std::fs::read_to_string(&path).unwrap();
        let recs: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let logs: Vec<(&str, &str)> = recs
            .iter()
            .map(|r| (r["stream"].as_str().unwrap(), r["log"].as_str().unwrap()))
            .collect();
        assert_eq!(logs[0], ("stdout", "one\n"));
        assert_eq!(logs[1], ("stderr", "err\n"));
        assert_eq!(logs[2], ("stdout", "two\n"));
        assert_eq!(logs[3].1.len(), LINE_MAX);
        assert_eq!(logs[4].1, "xxxxx\u{fffd} tail");
        assert!(recs[0]["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn tee_passes_raw_bytes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (r, w) = rustix::pipe::pipe().unwrap();
        let mut lw = LogWriter::new(Some(&dir.path().join("log")))
            .unwrap()
            .with_tee(std::os::fd::AsRawFd::as_raw_fd(&w), -1);
        lw.tee[1] = None;
        lw.feed(0, b"partial");
        let mut buf = [0u8; 16];
        let n = rustix::io::read(&r, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"partial");
    }
}

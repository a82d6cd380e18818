//! Forwarding the caller's signals to running containers. While at least one `run_container`
//! is running, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 are caught by a handler
//! that sends them on to every running container's process; the previous dispositions (Python's
//! handlers) come back when the last run ends. Signals the kernel generated (a terminal's ^C)
//! are not forwarded: the container shares the caller's process group and got them already.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

use super::sys::{self, SavedAction};

pub const FORWARDED: [i32; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

const SLOTS: usize = 64;
static PIDS: [AtomicI32; SLOTS] = [const { AtomicI32::new(0) }; SLOTS];

struct Installed {
    users: usize,
    saved: Vec<(i32, SavedAction)>,
}

static STATE: Mutex<Installed> = Mutex::new(Installed {
    users: 0,
    saved: Vec::new(),
});

/// Send `sig` to every registered container process. Async-signal-safe: atomics and kill only.
pub fn forward(sig: i32) {
    for slot in &PIDS {
        let pid = slot.load(Ordering::Relaxed);
        if pid > 0 {
            sys::kill_in_handler(pid, sig);
        }
    }
}

/// Keeps the forwarding handlers installed while alive; `watch` registers the container pid.
pub struct Forwarder {
    slot: Option<usize>,
}

impl Forwarder {
    pub fn install() -> std::io::Result<Forwarder> {
        let mut st = STATE.lock().unwrap_or_else(|e| e.into_inner());
        if st.users == 0 {
            let mut saved = Vec::with_capacity(FORWARDED.len());
            for sig in FORWARDED {
                match sys::set_forwarding_handler(sig) {
                    Ok(old) => saved.push((sig, old)),
                    Err(e) => {
                        for (s, old) in &saved {
                            sys::restore_handler(*s, old);
                        }
                        return Err(e.into());
                    }
                }
            }
            st.saved = saved;
        }
        st.users += 1;
        Ok(Forwarder { slot: None })
    }

    /// Forward signals to `pid` from now on. With more containers running at once than there
    /// are slots, the extra ones get no forwarding.
    pub fn watch(&mut self, pid: i32) {
        for (i, slot) in PIDS.iter().enumerate() {
            if slot
                .compare_exchange(0, pid, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                self.slot = Some(i);
                return;
            }
        }
    }

    /// Stop forwarding (before the pid is reaped, so a recycled pid never gets a signal).
    pub fn unwatch(&mut self) {
        if let Some(i) = self.slot.take() {
            PIDS[i].store(0, Ordering::Release);
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.unwatch();
        let mut st = STATE.lock().unwrap_or_else(|e| e.into_inner());
        st.users -= 1;
        if st.users == 0 {
            for (sig, old) in st.saved.drain(..) {
                sys::restore_handler(sig, &old);
            }
        }
    }
}

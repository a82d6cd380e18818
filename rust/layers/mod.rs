//! OCI layer handling: reading (extract), writing (create), the tar format, compression and the
//! one-pass stream that hashes, decompresses and unpacks. This file holds the shared error type.

pub mod compress;
pub mod create;
pub mod extract;
pub mod stream;
pub mod tarfmt;
#[cfg(test)]
pub mod testutil;

use std::fmt;
use std::io;

/// Errors of the native core. `Layer` becomes `pyrun._core.LayerError`, `Io` an `OSError`
/// subclass chosen by errno, `Value` a `ValueError`.
#[derive(Debug)]
pub enum Error {
    /// Corrupt or truncated input, an entry escaping the root, a digest mismatch.
    Layer(String),
    /// A system call failed; `context` says what was being done and on which path.
    Io { context: String, source: io::Error },
    /// A bad argument.
    Value(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn layer(msg: impl Into<String>) -> Self {
        Error::Layer(msg.into())
    }

    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Layer(m) | Error::Value(m) => f.write_str(m),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {}

/// Extension to attach a context string to io results.
pub trait IoContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(what(), e))
    }
}

impl<T> IoContext<T> for std::result::Result<T, rustix::io::Errno> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(what(), e.into()))
    }
}

/// Render a path from a tar stream for messages: lossy UTF-8 with control characters escaped,
/// so a hostile name cannot make a message span lines.
pub fn show(path: &[u8]) -> String {
    let s = String::from_utf8_lossy(path);
    if !s.chars().any(char::is_control) {
        return s.into_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether a failed syscall while extracting an entry is the environment's fault (disk full,
/// read-only, out of fds...) rather than the layer's (a parent that is not a directory, a
/// symlink loop, a hardlink to a directory, a name too long...). The former stay `OSError`s.
pub fn is_environmental(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(
            libc::ENOSPC
                | libc::EDQUOT
                | libc::EIO
                | libc::EROFS
                | libc::EMFILE
                | libc::ENFILE
                | libc::ENOMEM
                | libc::EACCES
                | libc::EBADF
                | libc::EFBIG
                | libc::ENODEV
                | libc::ENXIO
                | libc::ESTALE
        ) | None
    )
}

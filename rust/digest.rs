//! Content hashing: sha256 of a file or a byte range of it, and of many files in parallel on a
//! per-call scoped thread pool (no global pool, so it is safe after fork()).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::layers::{Error, IoContext, Result};

const BUF_SIZE: usize = 1 << 20;

/// `"sha256:<hex>"` of a finished hasher.
pub fn format_digest(h: Sha256) -> String {
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Normalise an expected digest for comparison: accept bare hex, compare case-insensitively.
pub fn normalize_digest(d: &str) -> String {
    let d = d.trim().to_ascii_lowercase();
    if d.contains(':') {
        d
    } else {
        format!("sha256:{d}")
    }
}

/// sha256 of `path` from `offset`, over `length` bytes (to the end of the file when `None`).
/// A file shorter than `offset + length` is an error.
pub fn sha256_file(path: &Path, offset: u64, length: Option<u64>) -> Result<String> {
    let file = File::open(path).ctx(|| format!("open {}", path.display()))?;
    let mut buf = vec![0u8; BUF_SIZE];
    let h = hash_range(&file, offset, length, &mut buf).map_err(|e| match e {
        RangeError::Io(e) => Error::io(format!("read {}", path.display()), e),
        RangeError::Short(got) => Error::Value(format!(
            "{} has only {} bytes after offset {}, fewer than the {} requested",
            path.display(),
            got,
            offset,
            length.unwrap_or(0)
        )),
    })?;
    Ok(format_digest(h))
}

enum RangeError {
    Io(io::Error),
    Short(u64),
}

fn hash_range(
    file: &File,
    offset: u64,
    length: Option<u64>,
    buf: &mut [u8],
) -> std::result::Result<Sha256, RangeError> {
    let mut h = Sha256::new();
    let mut pos = offset;
    let mut left = length.unwrap_or(u64::MAX);
    let mut total = 0u64;
    // Tell the kernel we read sequentially, so readahead is generous.
    let _ = rustix::fs::fadvise(file, offset, None, rustix::fs::Advice::Sequential);
    while left > 0 {
        let want = buf.len().min(left.min(usize::MAX as u64) as usize);
        let n = match file.read_at(&mut buf[..want], pos) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(RangeError::Io(e)),
        };
        h.update(&buf[..n]);
        pos += n as u64;
        left -= n as u64;
        total += n as u64;
    }
    if length.is_some() && left > 0 {
        return Err(RangeError::Short(total));
    }
    Ok(h)
}

/// sha256 of many whole files, `threads` at a time (0: one per CPU). Results follow `paths`;
/// the first failing path (in `paths` order) is reported.
pub fn sha256_files(paths: &[std::path::PathBuf], threads: usize) -> Result<Vec<String>> {
    let threads = if threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        threads
    };
    let threads = threads.min(paths.len()).max(1);
    let results: Vec<Mutex<Option<Result<String>>>> =
        paths.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let work = || {
        let mut buf = vec![0u8; BUF_SIZE];
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= paths.len() {
                break;
            }
            let path = &paths[i];
            let r = File::open(path)
                .ctx(|| format!("open {}", path.display()))
                .and_then(|f| {
                    hash_range(&f, 0, None, &mut buf).map_err(|e| match e {
                        RangeError::Io(e) => Error::io(format!("read {}", path.display()), e),
                        RangeError::Short(_) => unreachable!("no length requested"),
                    })
                })
                .map(format_digest);
            *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
        }
    };
    if threads == 1 {
        work();
    } else {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(work);
            }
        });
    }
    results
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .expect("every path is hashed")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const ABC: &str = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn file_and_range() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"xxabcyy").unwrap();
        assert_eq!(sha256_file(&p, 2, Some(3)).unwrap(), ABC);
        assert_eq!(sha256_file(&p, 7, None).unwrap(), EMPTY);
        assert_eq!(sha256_file(&p, 100, None).unwrap(), EMPTY);
        assert!(matches!(sha256_file(&p, 5, Some(3)), Err(Error::Value(_))));
        assert!(matches!(
            sha256_file(&dir.path().join("nope"), 0, None),
            Err(Error::Io { .. })
        ));
    }

    #[test]
    fn many_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for i in 0..20 {
            let p = dir.path().join(format!("f{i}"));
            std::fs::write(&p, if i % 2 == 0 { &b"abc"[..] } else { &b""[..] }).unwrap();
            paths.push(p);
        }
        for threads in [0, 1, 3] {
            let got = sha256_files(&paths, threads).unwrap();
            for (i, d) in got.iter().enumerate() {
                assert_eq!(d, if i % 2 == 0 { ABC } else { EMPTY });
            }
        }
        assert!(sha256_files(&[], 0).unwrap().is_empty());
        paths.push(dir.path().join("missing"));
        assert!(sha256_files(&paths, 2).is_err());
    }

    #[test]
    fn normalize() {
        assert_eq!(normalize_digest("ABC"), "sha256:abc");
        assert_eq!(normalize_digest("sha256:abc"), "sha256:abc");
    }
}

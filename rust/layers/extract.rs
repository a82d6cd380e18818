//! Unpacking a layer tar under a destination directory, confined by the kernel: every parent
//! directory is resolved with openat2(RESOLVE_IN_ROOT) from the destination's fd, and the final
//! component is always handled with *at calls that never follow it. OCI whiteouts become
//! overlayfs whiteouts ("overlay") or are applied as deletions ("apply").

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use super::compress::Compression;
use super::stream::{self, ChunkReader, RawTee, Source, SourceReader};
use super::tarfmt::{Entry, Kind, TarReader};
use super::{show, Error, IoContext, Result};
use crate::digest::normalize_digest;
use crate::sys;

/// What to do with OCI whiteout entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whiteouts {
    /// Write overlayfs whiteouts: 0/0 char devices and `trusted.overlay.opaque=y`.
    Overlay,
    /// Delete the whited-out paths from the destination (flattening layers into one tree).
    Apply,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub offset: u64,
    pub length: Option<u64>,
    pub blob_out: Option<PathBuf>,
    pub expect_digest: Option<String>,
    pub expect_diff_id: Option<String>,
    pub whiteouts: Whiteouts,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            offset: 0,
            length: None,
            blob_out: None,
            expect_digest: None,
            expect_diff_id: None,
            whiteouts: Whiteouts::Overlay,
        }
    }
}

#[derive(Debug)]
pub struct Summary {
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
    pub uncompressed_size: u64,
    pub compression: Compression,
    pub entries: u64,
    pub warnings: Vec<String>,
}

/// Extract one layer from `src` into the existing directory `dest`, in one pass.
pub fn extract_layer(src: &Source, dest: &Path, opts: &Options) -> Result<Summary> {
    let source = SourceReader::open(src, opts.offset, opts.length)?;
    let root = rfs::open(
        dest,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("open destination {}", dest.display()))?;
    let blob = match &opts.blob_out {
        Some(p) => Some((
            File::create(p).ctx(|| format!("create {}", p.display()))?,
            p.clone(),
        )),
        None => None,
    };
    let mut raw = RawTee::new(source, blob);
    let (magic, got) = raw.read_magic()?;
    let compression = Compression::detect(&magic[..got]);
    let (tx, rx) = std::sync::mpsc::sync_channel(stream::DEPTH);
    let drain_on_corrupt = opts.expect_digest.is_some();
    let (free_tx, free_rx) = std::sync::mpsc::channel();

    std::thread::scope(|s| {
        let producer = std::thread::Builder::new()
            .name("pyrun-layer-read".into())
            .spawn_scoped(s, move || {
                stream::produce(
                    raw,
                    &magic[..got],
                    compression,
                    tx,
                    free_rx,
                    drain_on_corrupt,
                )
            })
            .ctx(|| "start layer reader thread".into())?;
        let mut chunks = ChunkReader::new(rx, free_tx, compression != Compression::None);
        let mut ex = Extractor::new(root.as_fd(), opts.whiteouts);
        let outcome = ex.run(&mut TarReader::new(&mut chunks));
        if outcome.is_ok() || opts.expect_digest.is_some() {
            // Read to the end so both hashes cover every byte (and, after a failure, so a
            // digest mismatch can be reported as the likelier cause).
            chunks.drain();
        }
        let (diff_id, uncompressed_size) = chunks.finish();
        let produced = match producer.join() {
            Ok(p) => p,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let mismatch = |p: &stream::Produced, cause: &Error| -> Option<Error> {
            let exp = normalize_digest(opts.expect_digest.as_deref()?);
            (exp != p.digest).then(|| {
                Error::layer(format!(
                    "digest mismatch: expected {exp}, got {} ({cause})",
                    p.digest
                ))
            })
        };
        let produced = match (produced, outcome) {
            (Err(Error::Layer(m)), Err(e)) if m == stream::CANCELLED => return Err(e),
            // The reader's failure (short source, unreadable file) explains any tar error.
            (Err(e), _) => return Err(e),
            // A corrupt compressed stream explains the tar error it caused.
            (Ok(mut p), _) if p.corrupt.is_some() => {
                let cause = p.corrupt.take().expect("checked");
                return Err(mismatch(&p, &cause).unwrap_or(cause));
            }
            (Ok(p), Err(e)) => return Err(mismatch(&p, &e).unwrap_or(e)),
            (Ok(p), Ok(())) => p,
        };
        // Uncompressed layers: the tar is the blob, so the DiffID is the digest.
        let diff_id = diff_id.unwrap_or_else(|| produced.digest.clone());
        for (expected, got) in [
            (&opts.expect_digest, &produced.digest),
            (&opts.expect_diff_id, &diff_id),
        ] {
            if let Some(exp) = expected {
                let exp = normalize_digest(exp);
                if &exp != got {
                    return Err(Error::layer(format!(
                        "digest mismatch: expected {exp}, got {got}"
                    )));
                }
            }
        }
        Ok(Summary {
            digest: produced.digest,
            diff_id,
            size: produced.size,
            uncompressed_size,
            compression,
            entries: ex.entries,
            warnings: ex.warnings.finish(),
        })
    })
}

/// A syscall failure caused by the layer's content becomes a `LayerError` naming the entry;
/// failures of the environment stay I/O errors.
fn blame_entry(err: Error, entry: &[u8]) -> Error {
    match err {
        Error::Io { context, source } if !super::is_environmental(&source) => {
            let strerror =
                std::io::Error::from_raw_os_error(source.raw_os_error().unwrap_or(0)).to_string();
            let strerror = strerror
                .split(" (os error")
                .next()
                .unwrap_or("")
                .to_string();
            Error::layer(format!(
                "layer entry '{}' cannot be extracted: {context}: {strerror}",
                show(entry)
            ))
        }
        Error::Io { context, source } => Error::io(
            format!("extract layer entry '{}': {context}", show(entry)),
            source,
        ),
        other => other,
    }
}

/// Lexically clean a tar entry name into `out`: strip leading `/` and `./`, drop `.` and empty
/// components, resolve `..` (refusing any that climbs above the root). `""` is the root itself.
pub fn clean_path(name: &[u8], out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    for comp in name.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if out.is_empty() {
                    return Err(Error::layer(format!(
                        "layer entry '{}' escapes the target directory",
                        show(name)
                    )));
                }
                let cut = out.iter().rposition(|&b| b == b'/').unwrap_or(0);
                out.truncate(cut);
            }
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Ok(())
}

/// Lexical cleaning where `..` at the top stays at the top, as RESOLVE_IN_ROOT treats it.
fn clean_clamped(path: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    for comp in path.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                let cut = out.iter().rposition(|&b| b == b'/').unwrap_or(0);
                out.truncate(cut);
            }
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    out
}

fn not_a_dir(entry: &[u8], parent: &[u8]) -> Error {
    Error::layer(format!(
        "layer entry '{}' cannot be extracted: a parent of '{}' is not a directory",
        show(entry),
        show(parent)
    ))
}

fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b"", path),
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + name.len() + 1);
    p.extend_from_slice(dir);
    if !dir.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn timestamps(sec: i64, nsec: u32) -> Timestamps {
    let t = Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Warnings with a cap, so a layer full of device nodes does not produce megabytes of text.
#[derive(Default)]
pub struct Warnings {
    list: Vec<String>,
    dropped: usize,
}

const MAX_WARNINGS: usize = 100;

impl Warnings {
    fn push(&mut self, w: String) {
        if self.list.len() < MAX_WARNINGS {
            self.list.push(w);
        } else {
            self.dropped += 1;
        }
    }

    fn finish(&mut self) -> Vec<String> {
        let mut v = std::mem::take(&mut self.list);
        if self.dropped > 0 {
            v.push(format!("... and {} more warnings", self.dropped));
        }
        v
    }
}

struct Extractor<'r> {
    root: BorrowedFd<'r>,
    whiteouts: Whiteouts,
    /// The last parent directory resolved, by cleaned path.
    cache: Option<(Vec<u8>, OwnedFd)>,
    /// Set when a directory was removed while the cached fd was lent out by `with_parent`.
    cache_stale: bool,
    chown: bool,
    umask: u32,
    dir_times: Vec<(Vec<u8>, i64, u32)>,
    /// Paths this layer created, and their ancestors.
    touched: HashSet<Vec<u8>>,
    /// Paths this layer created, and whether each is a directory. A whiteout applies only to
    /// lower layers, so one naming an entry of its own layer hides nothing of it.
    own: HashMap<Vec<u8>, bool>,
    /// Paths this layer whited out: a directory it then creates there hides the lower one.
    whited: HashSet<Vec<u8>>,
    warnings: Warnings,
    entries: u64,
    path: Vec<u8>,
    link: Vec<u8>,
    opaque_fallback_warned: bool,
}

/// How an fd handed to the metadata helpers may be used.
#[derive(Clone, Copy)]
enum Target<'a> {
    /// An open regular file: f* calls.
    File(BorrowedFd<'a>),
    /// `name` in directory `dir`, never following a final symlink.
    At(BorrowedFd<'a>, &'a [u8]),
}

impl<'r> Extractor<'r> {
    fn new(root: BorrowedFd<'r>, whiteouts: Whiteouts) -> Self {
        Extractor {
            root,
            whiteouts,
            cache: None,
            cache_stale: false,
            chown: sys::effective_ids().0 == 0,
            umask: sys::current_umask(),
            dir_times: Vec::new(),
            touched: HashSet::new(),
            own: HashMap::new(),
            whited: HashSet::new(),
            warnings: Warnings::default(),
            entries: 0,
            path: Vec::new(),
            link: Vec::new(),
            opaque_fallback_warned: false,
        }
    }

    fn run<R: BufRead>(&mut self, tar: &mut TarReader<R>) -> Result<()> {
        let mut e = Entry::default();
        while tar.next(&mut e)? {
            let mut path = std::mem::take(&mut self.path);
            let r = clean_path(&e.path, &mut path).and_then(|()| self.entry(&path, &e, tar));
            self.path = path;
            r.map_err(|err| blame_entry(err, &e.path))?;
        }
        self.apply_dir_times()
    }

    fn entry<R: BufRead>(&mut self, path: &[u8], e: &Entry, tar: &mut TarReader<R>) -> Result<()> {
        if path.is_empty() {
            return self.root_entry(e);
        }
        if path.split(|&b| b == b'/').any(|c| c == b".wh..wh.plnk") {
            return Ok(());
        }
        let (parent, name) = split_parent(path);
        if let Some(target) = name.strip_prefix(b".wh.") {
            if target == b".wh..opq" {
                return self.opaque(parent);
            }
            if target.is_empty() || target == b"." || target == b".." {
                return Err(Error::layer(format!(
                    "layer entry '{}' is not a valid whiteout",
                    show(&e.path)
                )));
            }
            let hidden = join(parent, target);
            match self.own.get(&hidden) {
                Some(false) => return Ok(()),
                // A whiteout of a directory this layer made (or put entries in): the lower one
                // is hidden (opaque), this layer's own contents stay.
                _ if self.touched.contains(&hidden) => return self.opaque(&hidden),
                _ => {}
            }
            self.whited.insert(hidden);
            return match self.whiteouts {
                Whiteouts::Overlay => self.with_parent(parent, true, path, |s, pfd| {
                    s.overlay_whiteout(pfd, target, e)
                }),
                Whiteouts::Apply => self.with_parent(parent, false, path, |s, pfd| {
                    s.remove_existing(pfd, target, path)
                }),
            }
            .map(|_| ());
        }
        let created = match e.kind {
            Kind::Other(flag) => {
                self.warnings.push(format!(
                    "skipped layer entry '{}' of unsupported type '{}'",
                    show(path),
                    (flag as char).escape_default()
                ));
                false
            }
            Kind::Hardlink => self.hardlink(path, e)?,
            _ => self
                .with_parent(parent, true, path, |s, pfd| {
                    s.create(pfd, name, path, e, tar)
                })?
                .unwrap_or(false),
        };
        if created {
            self.entries += 1;
            let is_dir = e.kind == Kind::Dir;
            self.own.insert(path.to_vec(), is_dir);
            self.touch(path);
            if is_dir && self.whiteouts == Whiteouts::Overlay && self.whited.contains(path) {
                // `.wh.d` then `d/`: the new directory replaces the lower one entirely.
                self.opaque(path)?;
            }
        }
        Ok(())
    }

    fn touch(&mut self, path: &[u8]) {
        if !self.touched.contains(path) {
            self.touched.insert(path.to_vec());
        }
        for (i, &b) in path.iter().enumerate() {
            if b == b'/' && !self.touched.contains(&path[..i]) {
                self.touched.insert(path[..i].to_vec());
            }
        }
    }

    /// Run `f` with an fd of the directory `parent` (resolved in-root, created when missing and
    /// `create`). Returns `None` when it is missing and not created.
    fn with_parent<T>(
        &mut self,
        parent: &[u8],
        create: bool,
        entry: &[u8],
        f: impl FnOnce(&mut Self, BorrowedFd<'_>) -> Result<T>,
    ) -> Result<Option<T>> {
        // A removal outside this call already dropped the cache; start afresh.
        self.cache_stale = false;
        if parent.is_empty() {
            let root = self.root;
            return f(self, root).map(Some);
        }
        let (mut key, fd) = match self.cache.take() {
            Some((p, fd)) if p == parent => (p, fd),
            other => {
                let mut key = other.map(|(p, _)| p).unwrap_or_default();
                let Some(fd) = self.open_dir(parent, create, entry)? else {
                    return Ok(None);
                };
                key.clear();
                key.extend_from_slice(parent);
                (key, fd)
            }
        };
        let r = f(self, fd.as_fd());
        if self.cache_stale {
            self.cache_stale = false;
            key.clear();
        } else {
            self.cache = Some((key, fd));
        }
        r.map(Some)
    }

    /// Open (and with `create`, make) the directory `path` under the root.
    fn open_dir(&mut self, path: &[u8], create: bool, entry: &[u8]) -> Result<Option<OwnedFd>> {
        match sys::open_in_root(self.root, path, OFlags::PATH | OFlags::DIRECTORY) {
            Ok(fd) => Ok(Some(fd)),
            Err(e)
                if !create
                    && matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) =>
            {
                Ok(None)
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                self.mkdir_all(path, entry).map(Some)
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Err(not_a_dir(entry, path)),
            Err(e) => Err(Error::io(
                format!("open parent directory '{}'", show(path)),
                e,
            )),
        }
    }

    /// Create the missing directories of `path` one component at a time (0755), each relative
    /// to the in-root fd of its parent. A component that is a symlink to a missing directory
    /// gets its target created (resolved inside the root), as containerd does.
    fn mkdir_all(&mut self, path: &[u8], entry: &[u8]) -> Result<OwnedFd> {
        self.mkdir_all_depth(path, entry, 0)
    }

    fn mkdir_all_depth(&mut self, path: &[u8], entry: &[u8], depth: u32) -> Result<OwnedFd> {
        let ctx = |what: &str, p: &[u8]| format!("{what} '{}'", show(p));
        if depth > 40 {
            return Err(Error::io(
                ctx("create directory", path),
                std::io::Error::from_raw_os_error(libc::ELOOP),
            ));
        }
        let mut fd: Option<OwnedFd> = None;
        let mut start = 0;
        for end in path
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'/')
            .map(|(i, _)| i)
            .chain([path.len()])
        {
            let prefix = &path[..end];
            let comp = &path[start..end];
            let base = &path[..start.saturating_sub(1)];
            start = end + 1;
            match sys::open_in_root(self.root, prefix, OFlags::PATH | OFlags::DIRECTORY) {
                Ok(f) => {
                    fd = Some(f);
                    continue;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                    return Err(not_a_dir(entry, prefix))
                }
                Err(e) => return Err(Error::io(ctx("open parent directory", prefix), e)),
            }
            let dfd = fd.as_ref().map(|f| f.as_fd()).unwrap_or(self.root);
            match rfs::mkdirat(dfd, comp, Mode::from_raw_mode(0o755)) {
                Ok(()) => {
                    if self.umask & 0o755 != 0 {
                        sys::chmod_nofollow(dfd, comp, 0o755)
                            .map_err(|e| Error::io(ctx("chmod", prefix), e))?;
                    }
                }
                Err(Errno::EXIST) => {
                    // A dangling symlink: create its in-root target, then resolve again.
                    if let Ok(target) = rfs::readlinkat(dfd, comp, Vec::new()) {
                        let target = target.into_bytes();
                        let mut resolved = Vec::new();
                        if !target.starts_with(b"/") {
                            resolved.extend_from_slice(base);
                            resolved.push(b'/');
                        }
                        resolved.extend_from_slice(&target);
                        let resolved = clean_clamped(&resolved);
                        if !resolved.is_empty() {
                            self.mkdir_all_depth(&resolved, entry, depth + 1)?;
                        }
                    }
                }
                Err(e) => return Err(Error::io(ctx("create directory", prefix), e.into())),
            }
            fd = Some(
                sys::open_in_root(self.root, prefix, OFlags::PATH | OFlags::DIRECTORY)
                    .map_err(|e| Error::io(ctx("create directory", prefix), e))?,
            );
        }
        fd.ok_or_else(|| Error::layer("empty parent path"))
    }

    /// Remove whatever is at `name` (recursively for a directory, never following symlinks).
    fn remove_existing(&mut self, dfd: BorrowedFd<'_>, name: &[u8], path: &[u8]) -> Result<()> {
        match rfs::unlinkat(dfd, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(Errno::ISDIR) | Err(Errno::PERM) => {
                // The cached parent fd may be (below) the directory going away.
                self.cache = None;
                self.cache_stale = true;
                remove_tree(dfd, name).map_err(|e| Error::io(format!("remove '{}'", show(path)), e))
            }
            Err(e) => Err(Error::io(format!("remove '{}'", show(path)), e.into())),
        }
    }

    /// Create the entry `name` in `pfd`. Returns whether something was created.
    fn create<R: BufRead>(
        &mut self,
        pfd: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
        e: &Entry,
        tar: &mut TarReader<R>,
    ) -> Result<bool> {
        let perm = e.mode & 0o777;
        let ctx = |what: &str| format!("{what} '{}'", show(path));
        match e.kind {
            Kind::File => {
                let flags = OFlags::WRONLY
                    | OFlags::CREATE
                    | OFlags::EXCL
                    | OFlags::NOFOLLOW
                    | OFlags::CLOEXEC;
                let fd = match rfs::openat(pfd, name, flags, Mode::from_raw_mode(perm)) {
                    Err(Errno::EXIST) => {
                        self.remove_existing(pfd, name, path)?;
                        rfs::openat(pfd, name, flags, Mode::from_raw_mode(perm))
                    }
                    r => r,
                }
                .ctx(|| ctx("create file"))?;
                let mut f = File::from(fd);
                loop {
                    let d = tar.data(&e.path)?;
                    if d.is_empty() {
                        break;
                    }
                    let n = d.len();
                    f.write_all(d).ctx(|| ctx("write"))?;
                    tar.consume(n);
                }
                let needs_chmod = perm & !self.umask != e.mode;
                self.metadata(Target::File(f.as_fd()), path, e, needs_chmod)?;
            }
            Kind::Dir => {
                match rfs::mkdirat(pfd, name, Mode::from_raw_mode(perm)) {
                    Ok(()) => {}
                    Err(Errno::EXIST) => {
                        let st = rfs::statat(pfd, name, AtFlags::SYMLINK_NOFOLLOW)
                            .ctx(|| ctx("stat"))?;
                        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                            self.remove_existing(pfd, name, path)?;
                            rfs::mkdirat(pfd, name, Mode::from_raw_mode(perm))
                                .ctx(|| ctx("create directory"))?;
                        }
                    }
                    Err(err) => return Err(Error::io(ctx("create directory"), err.into())),
                }
                // Always chmod: a new directory inherits setgid from its parent, an existing
                // one (kept, as both are directories) has its old mode.
                self.metadata(Target::At(pfd, name), path, e, true)?;
                self.dir_times.push((path.to_vec(), e.mtime, e.mtime_nsec));
            }
            Kind::Symlink => {
                match rfs::symlinkat(&e.link[..], pfd, name) {
                    Err(Errno::EXIST) => {
                        self.remove_existing(pfd, name, path)?;
                        rfs::symlinkat(&e.link[..], pfd, name)
                    }
                    r => r,
                }
                .ctx(|| ctx("create symlink"))?;
                self.metadata(Target::At(pfd, name), path, e, false)?;
            }
            Kind::Char | Kind::Block | Kind::Fifo => {
                let ft = match e.kind {
                    Kind::Char => FileType::CharacterDevice,
                    Kind::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let dev = rfs::makedev(e.dev_major, e.dev_minor);
                let mode = Mode::from_raw_mode(perm);
                let r = match rfs::mknodat(pfd, name, ft, mode, dev) {
                    Err(Errno::EXIST) => {
                        self.remove_existing(pfd, name, path)?;
                        rfs::mknodat(pfd, name, ft, mode, dev)
                    }
                    r => r,
                };
                match r {
                    Ok(()) => {}
                    Err(Errno::PERM) | Err(Errno::ACCESS) if e.kind != Kind::Fifo => {
                        self.warnings.push(format!(
                            "skipped device node {}: operation not permitted",
                            show(path)
                        ));
                        return Ok(false);
                    }
                    Err(err) => return Err(Error::io(ctx("create node"), err.into())),
                }
                let needs_chmod = perm & !self.umask != e.mode;
                self.metadata(Target::At(pfd, name), path, e, needs_chmod)?;
            }
            Kind::Hardlink | Kind::Other(_) => unreachable!("handled by the caller"),
        }
        Ok(true)
    }

    /// chown, then chmod (after chown, which clears setuid), then xattrs, then mtime (except
    /// directories, whose times are set once the whole layer is written).
    fn metadata(&mut self, t: Target<'_>, path: &[u8], e: &Entry, chmod: bool) -> Result<()> {
        let is_symlink = e.kind == Kind::Symlink;
        if self.chown {
            match (u32::try_from(e.uid), u32::try_from(e.gid)) {
                (Ok(uid), Ok(gid)) => {
                    let r = match t {
                        Target::File(fd) => rfs::fchown(
                            fd,
                            Some(rfs::Uid::from_raw(uid)),
                            Some(rfs::Gid::from_raw(gid)),
                        )
                        .map_err(Into::into),
                        Target::At(dfd, name) => sys::chown_nofollow(dfd, name, uid, gid),
                    };
                    if let Err(err) = r {
                        if matches!(err.raw_os_error(), Some(libc::EINVAL) | Some(libc::EPERM)) {
                            self.warnings.push(format!(
                                "could not change owner of '{}' to {uid}:{gid}: {err}",
                                show(path)
                            ));
                        } else {
                            return Err(Error::io(format!("chown '{}'", show(path)), err));
                        }
                    }
                }
                _ => self.warnings.push(format!(
                    "could not change owner of '{}' to {}:{}: id out of range",
                    show(path),
                    e.uid,
                    e.gid
                )),
            }
        }
        if chmod && !is_symlink {
            let mode = e.mode & 0o7777;
            match t {
                Target::File(fd) => rfs::fchmod(fd, Mode::from_raw_mode(mode)).map_err(Into::into),
                Target::At(dfd, name) => sys::chmod_nofollow(dfd, name, mode),
            }
            .map_err(|err| Error::io(format!("chmod '{}'", show(path)), err))?;
        }
        if !e.xattrs.is_empty() && !is_symlink {
            self.xattrs(t, path, e)?;
        }
        if e.kind != Kind::Dir {
            let ts = timestamps(e.mtime, e.mtime_nsec);
            match t {
                Target::File(fd) => rfs::futimens(fd, &ts),
                Target::At(dfd, name) => rfs::utimensat(dfd, name, &ts, AtFlags::SYMLINK_NOFOLLOW),
            }
            .ctx(|| format!("set times of '{}'", show(path)))?;
        }
        Ok(())
    }

    fn xattrs(&mut self, t: Target<'_>, path: &[u8], e: &Entry) -> Result<()> {
        let wanted: Vec<&(Vec<u8>, Vec<u8>)> = e
            .xattrs
            .iter()
            .filter(|(k, _)| {
                // trusted.* and overlayfs' own attributes (trusted.overlay.*, or user.overlay.*
                // under `userxattr`) would let a layer forge whiteouts, opacity or redirects.
                if k.starts_with(b"trusted.") || k.starts_with(b"user.overlay.") {
                    self.warnings.push(format!(
                        "ignored xattr {} on '{}': layers may not set trusted.* or overlay attributes",
                        show(k),
                        show(path)
                    ));
                    return false;
                }
                k == b"security.capability" || k.starts_with(b"user.")
            })
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        // Directories are opened for reading; fifos and devices through an O_PATH fd.
        let (holder, opath): (Option<OwnedFd>, bool) = match t {
            Target::File(_) => (None, false),
            Target::At(dfd, name) => {
                let (flags, opath) = if e.kind == Kind::Dir {
                    (OFlags::RDONLY | OFlags::DIRECTORY, false)
                } else {
                    (OFlags::PATH, true)
                };
                // An empty name is the directory fd itself (the layer's root entry).
                let name: &[u8] = if name.is_empty() { b"." } else { name };
                let fd = rfs::openat(
                    dfd,
                    name,
                    flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .ctx(|| format!("open '{}'", show(path)))?;
                (Some(fd), opath)
            }
        };
        let fd = match (&holder, t) {
            (Some(h), _) => h.as_fd(),
            (None, Target::File(fd)) => fd,
            (None, Target::At(..)) => unreachable!(),
        };
        for (k, v) in wanted {
            if let Err(err) = sys::set_xattr_fd(fd, k, v, opath) {
                self.warnings.push(format!(
                    "could not set xattr {} on '{}': {err}",
                    show(k),
                    show(path)
                ));
            }
        }
        Ok(())
    }

    fn root_entry(&mut self, e: &Entry) -> Result<()> {
        if e.kind != Kind::Dir {
            self.warnings.push(format!(
                "skipped layer entry '{}': it names the root directory",
                show(&e.path)
            ));
            return Ok(());
        }
        let root = self.root;
        self.metadata(Target::At(root, b""), b".", e, true)?;
        self.dir_times.push((Vec::new(), e.mtime, e.mtime_nsec));
        self.entries += 1;
        Ok(())
    }

    fn hardlink(&mut self, path: &[u8], e: &Entry) -> Result<bool> {
        let mut target = std::mem::take(&mut self.link);
        let r = (|| {
            clean_path(&e.link, &mut target).map_err(|_| {
                Error::layer(format!(
                    "layer entry '{}' links to '{}', which escapes the target directory",
                    show(&e.path),
                    show(&e.link)
                ))
            })?;
            if target.as_slice() == path {
                return Ok(false);
            }
            let missing = || {
                Error::layer(format!(
                    "layer entry '{}' is a hardlink to '{}', which is not in the layer",
                    show(&e.path),
                    show(&e.link)
                ))
            };
            if target.is_empty() {
                return Err(missing());
            }
            let (tparent, tname) = split_parent(&target);
            let tdir = match sys::open_in_root(self.root, tparent, OFlags::PATH | OFlags::DIRECTORY)
            {
                Ok(fd) => fd,
                Err(err)
                    if matches!(err.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) =>
                {
                    return Err(missing())
                }
                Err(err) => return Err(Error::io(format!("open '{}'", show(tparent)), err)),
            };
            match rfs::statat(&tdir, tname, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                    return Err(Error::layer(format!(
                        "layer entry '{}' is a hardlink to '{}', which is a directory",
                        show(&e.path),
                        show(&e.link)
                    )));
                }
                Ok(_) => {}
                Err(Errno::NOENT) | Err(Errno::NOTDIR) => return Err(missing()),
                Err(err) => {
                    return Err(Error::io(format!("stat '{}'", show(&target)), err.into()));
                }
            }
            let (parent, name) = split_parent(path);
            self.with_parent(parent, true, path, |s, pfd| {
                let link = || rfs::linkat(&tdir, tname, pfd, name, AtFlags::empty());
                match link() {
                    Ok(()) => Ok(()),
                    Err(Errno::EXIST) => {
                        s.remove_existing(pfd, name, path)?;
                        link().ctx(|| format!("link '{}'", show(path)))
                    }
                    Err(Errno::NOENT) => Err(missing()),
                    Err(err) => Err(Error::io(
                        format!("link '{}' to '{}'", show(path), show(&target)),
                        err.into(),
                    )),
                }
            })?;
            Ok(true)
        })();
        self.link = target;
        r
    }

    fn overlay_whiteout(&mut self, pfd: BorrowedFd<'_>, target: &[u8], e: &Entry) -> Result<()> {
        let (parent, _) = split_parent(&e.path);
        let shown = || show(&join(parent, target));
        self.remove_existing(pfd, target, target)?;
        rfs::mknodat(pfd, target, FileType::CharacterDevice, Mode::empty(), 0)
            .ctx(|| format!("create whiteout for '{}'", shown()))?;
        if self.chown && (e.uid, e.gid) != (0, 0) {
            if let (Ok(uid), Ok(gid)) = (u32::try_from(e.uid), u32::try_from(e.gid)) {
                if let Err(err) = sys::chown_nofollow(pfd, target, uid, gid) {
                    self.warnings.push(format!(
                        "could not change owner of whiteout '{}': {err}",
                        shown()
                    ));
                }
            }
        }
        Ok(())
    }

    fn opaque(&mut self, dir: &[u8]) -> Result<()> {
        match self.whiteouts {
            Whiteouts::Overlay => {
                let fd = if dir.is_empty() {
                    None
                } else {
                    Some(self.open_dir(dir, true, dir)?.expect("created"))
                };
                let base = fd.as_ref().map(|f| f.as_fd()).unwrap_or(self.root);
                let dfd = rfs::openat(
                    base,
                    ".",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .ctx(|| format!("open '{}'", show(dir)))?;
                match sys::set_xattr_fd(dfd.as_fd(), b"trusted.overlay.opaque", b"y", false) {
                    Ok(()) => Ok(()),
                    Err(err) if err.raw_os_error() == Some(libc::EPERM) => {
                        // Without CAP_SYS_ADMIN (rootless), overlayfs reads user.overlay.* when
                        // mounted with `userxattr`.
                        sys::set_xattr_fd(dfd.as_fd(), b"user.overlay.opaque", b"y", false)
                            .ctx(|| format!("mark '{}' opaque", show(dir)))?;
                        if !self.opaque_fallback_warned {
                            self.opaque_fallback_warned = true;
                            self.warnings.push(
                                "trusted.overlay.opaque not permitted; set user.overlay.opaque instead (mount with userxattr)"
                                    .into(),
                            );
                        }
                        Ok(())
                    }
                    Err(err) => Err(Error::io(format!("mark '{}' opaque", show(dir)), err)),
                }
            }
            Whiteouts::Apply => {
                let fd = if dir.is_empty() {
                    rfs::openat(
                        self.root,
                        ".",
                        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .ctx(|| "open root".into())?
                } else {
                    match self.open_dir(dir, false, dir)? {
                        Some(fd) => fd,
                        None => return Ok(()),
                    }
                };
                self.cache = None;
                let mut prefix = dir.to_vec();
                self.clear_lower(fd.as_fd(), &mut prefix)
            }
        }
    }

    /// Opaque directory in "apply" mode: remove every child that this layer did not create,
    /// recursing into kept directories (their older contents are hidden too).
    fn clear_lower(&mut self, dfd: BorrowedFd<'_>, prefix: &mut Vec<u8>) -> Result<()> {
        let rd = rfs::openat(
            dfd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ctx(|| format!("open '{}'", show(prefix)))?;
        let children = list_dir(rd).ctx(|| format!("read directory '{}'", show(prefix)))?;
        for (name, ft) in children {
            let len = prefix.len();
            if !prefix.is_empty() {
                prefix.push(b'/');
            }
            prefix.extend_from_slice(&name);
            let r = if self.touched.contains(prefix.as_slice()) {
                let is_dir = match ft {
                    FileType::Directory => true,
                    FileType::Unknown => rfs::statat(dfd, &name[..], AtFlags::SYMLINK_NOFOLLOW)
                        .map(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
                        .unwrap_or(false),
                    _ => false,
                };
                if is_dir {
                    match rfs::openat(
                        dfd,
                        &name[..],
                        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    ) {
                        Ok(sub) => self.clear_lower(sub.as_fd(), prefix),
                        Err(err) => Err(Error::io(format!("open '{}'", show(prefix)), err.into())),
                    }
                } else {
                    Ok(())
                }
            } else {
                let shown = prefix.clone();
                self.remove_existing(dfd, &name, &shown)
            };
            prefix.truncate(len);
            r?;
        }
        self.cache_stale = true;
        Ok(())
    }

    /// Directory times last (creating children changed them), deepest-last-written first.
    fn apply_dir_times(&mut self) -> Result<()> {
        let times = std::mem::take(&mut self.dir_times);
        for (path, sec, nsec) in times.iter().rev() {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW;
            let fd = if path.is_empty() {
                rfs::openat(self.root, ".", flags | OFlags::CLOEXEC, Mode::empty())
                    .map_err(Into::into)
            } else {
                sys::open_in_root(self.root, path, flags)
            };
            let fd = match fd {
                Ok(fd) => fd,
                Err(err)
                    if matches!(
                        err.raw_os_error(),
                        Some(libc::ENOENT)
                            | Some(libc::ENOTDIR)
                            | Some(libc::ELOOP)
                            | Some(libc::EACCES)
                    ) =>
                {
                    continue
                }
                Err(err) => return Err(Error::io(format!("open '{}'", show(path)), err)),
            };
            rfs::futimens(&fd, &timestamps(*sec, *nsec))
                .ctx(|| format!("set times of '{}'", show(path)))?;
        }
        Ok(())
    }
}

/// Names and types of a directory's children (without `.` and `..`).
fn list_dir(fd: OwnedFd) -> std::io::Result<Vec<(Vec<u8>, FileType)>> {
    let mut dir = rfs::Dir::new(fd)?;
    let mut out = Vec::new();
    while let Some(ent) = dir.read() {
        let ent = ent?;
        let name = ent.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        out.push((name.to_vec(), ent.file_type()));
    }
    Ok(out)
}

/// Remove `name` in `dfd` and everything below it, relative to fds, never following symlinks.
pub fn remove_tree(dfd: BorrowedFd<'_>, name: &[u8]) -> std::io::Result<()> {
    let fd = match rfs::openat(
        dfd,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
            return rfs::unlinkat(dfd, name, AtFlags::empty()).map_err(Into::into)
        }
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let sub = rustix::io::fcntl_dupfd_cloexec(&fd, 0)?;
    for (child, ft) in list_dir(fd)? {
        if ft == FileType::Directory {
            remove_tree(sub.as_fd(), &child)?;
            continue;
        }
        match rfs::unlinkat(&sub, &child[..], AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(Errno::ISDIR) => remove_tree(sub.as_fd(), &child)?,
            Err(e) => return Err(e.into()),
        }
    }
    match rfs::unlinkat(dfd, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
pub mod tests_support {
    pub fn timestamps(t: i64) -> rustix::fs::Timestamps {
        super::timestamps(t, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::testutil::{compress, sha256, snapshot, RawTar, E};
    use crate::require_root;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    fn run(data: &[u8], dest: &Path, opts: &Options) -> Result<Summary> {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), data).unwrap();
        extract_layer(&Source::Path(f.path().to_path_buf()), dest, opts)
    }

    fn layer_err(r: Result<Summary>) -> String {
        match r {
            Err(Error::Layer(m)) => m,
            other => panic!("expected a LayerError, got {other:?}"),
        }
    }

    fn apply() -> Options {
        Options {
            whiteouts: Whiteouts::Apply,
            ..Options::default()
        }
    }

    #[test]
    fn clean_paths() {
        let mut out = Vec::new();
        for (inp, exp) in [
            ("a/b", "a/b"),
            ("/a//b/", "a/b"),
            ("./a/./b", "a/b"),
            ("a/../b", "b"),
            ("./", ""),
            ("/", ""),
            ("a/..", ""),
        ] {
            clean_path(inp.as_bytes(), &mut out).unwrap();
            assert_eq!(out, exp.as_bytes(), "{inp}");
        }
        for bad in ["..", "../x", "a/../../x", "/../x", "./.."] {
            assert!(clean_path(bad.as_bytes(), &mut out).is_err(), "{bad}");
        }
    }

    #[test]
    fn extracts_all_types_with_metadata() {
        let dest = tempfile::tempdir().unwrap();
        let xa: &[(&[u8], &[u8])] = &[(b"user.comment", b"hi"), (b"trusted.overlay.opaque", b"y")];
        let tar = RawTar::default()
            .add(E {
                mode: 0o750,
                mtime: 1_000_000,
                xattrs: &[(b"user.root", b"r")],
                ..E::new("./", b'5')
            })
            .add(E {
                mode: 0o700,
                mtime: 1_111_111,
                ..E::new("./dir/", b'5')
            })
            .add(E {
                data: b"hello",
                mode: 0o4755,
                mtime: 1_234_567,
                xattrs: xa,
                ..E::new("dir/file", b'0')
            })
            .add(E {
                data: b"",
                mode: 0o600,
                ..E::new("dir/empty", b'0')
            })
            .symlink("dir/link", "../nowhere")
            .hardlink("dir/hard", "dir/file")
            .add(E {
                mode: 0o640,
                ..E::new("fifo", b'6')
            })
            .add(E {
                mode: 0o1777,
                ..E::new("tmp", b'5')
            })
            .add(E {
                data: b"deep",
                ..E::new("implicit/parents/f", b'0')
            })
            .finish();
        let s = run(&tar, dest.path(), &Options::default()).unwrap();
        assert_eq!(s.entries, 9);
        assert_eq!(s.compression, Compression::None);
        assert_eq!(s.digest, sha256(&tar));
        assert_eq!(s.diff_id, s.digest);
        assert_eq!(s.size, tar.len() as u64);
        assert!(
            s.warnings
                .iter()
                .any(|w| w.contains("trusted.overlay.opaque")),
            "{:?}",
            s.warnings
        );

        let d = dest.path();
        let md = |p: &str| std::fs::symlink_metadata(d.join(p)).unwrap();
        assert_eq!(std::fs::read(d.join("dir/file")).unwrap(), b"hello");
        assert_eq!(md("dir/file").mode() & 0o7777, 0o4755);
        assert_eq!(md("dir/file").mtime(), 1_234_567);
        assert_eq!(md("dir").mode() & 0o7777, 0o700);
        assert_eq!(
            md("dir").mtime(),
            1_111_111,
            "directory mtime is applied after its children"
        );
        assert_eq!(md("").mode() & 0o7777, 0o750);
        assert_eq!(md("").mtime(), 1_000_000);
        assert_eq!(
            xattr::get(d, "user.root").unwrap(),
            Some(b"r".to_vec()),
            "{:?}",
            s.warnings
        );
        assert_eq!(md("dir/empty").mode() & 0o7777, 0o600);
        assert_eq!(
            std::fs::read_link(d.join("dir/link")).unwrap(),
            Path::new("../nowhere")
        );
        assert_eq!(md("dir/hard").ino(), md("dir/file").ino());
        assert!(md("fifo").file_type().is_fifo());
        assert_eq!(md("fifo").mode() & 0o7777, 0o640);
        assert_eq!(md("tmp").mode() & 0o7777, 0o1777);
        assert_eq!(md("implicit/parents").mode() & 0o7777, 0o755);
        assert_eq!(
            xattr::get(d.join("dir/file"), "user.comment").unwrap(),
            Some(b"hi".to_vec())
        );
        assert_eq!(
            xattr::get(d.join("dir/file"), "trusted.overlay.opaque").unwrap(),
            None
        );
    }

    #[test]
    fn owners_devices_and_capabilities() {
        require_root!();
        let dest = tempfile::tempdir().unwrap();
        let cap: &[u8] = &[1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let xa: &[(&[u8], &[u8])] = &[(b"security.capability", cap)];
        let tar = RawTar::default()
            .add(E {
                uid: 1234,
                gid: 5678,
                mode: 0o2755,
                ..E::new("d/", b'5')
            })
            .add(E {
                data: b"x",
                uid: 1000,
                gid: 1000,
                mode: 0o4750,
                xattrs: xa,
                ..E::new("d/ping", b'0')
            })
            .add(E {
                uid: 42,
                gid: 43,
                link: b"ping",
                ..E::new("d/sym", b'2')
            })
            .add(E {
                dev: (1, 3),
                mode: 0o666,
                ..E::new("dev/null", b'3')
            })
            .add(E {
                dev: (7, 0),
                mode: 0o660,
                gid: 6,
                ..E::new("dev/loop0", b'4')
            })
            .finish();
        let s = run(&tar, dest.path(), &Options::default()).unwrap();
        let d = dest.path();
        let md = |p: &str| std::fs::symlink_metadata(d.join(p)).unwrap();
        assert_eq!(
            (md("d").uid(), md("d").gid(), md("d").mode() & 0o7777),
            (1234, 5678, 0o2755)
        );
        assert_eq!(
            (md("d/ping").uid(), md("d/ping").mode() & 0o7777),
            (1000, 0o4750)
        );
        assert_eq!(
            xattr::get(d.join("d/ping"), "security.capability").unwrap(),
            Some(cap.to_vec())
        );
        assert_eq!((md("d/sym").uid(), md("d/sym").gid()), (42, 43));
        if s.warnings
            .iter()
            .any(|w| w.starts_with("skipped device node"))
        {
            eprintln!("device nodes not permitted here: {:?}", s.warnings);
        } else {
            assert!(md("dev/null").file_type().is_char_device());
            assert_eq!(md("dev/null").rdev(), rustix::fs::makedev(1, 3));
            assert_eq!(md("dev/null").mode() & 0o7777, 0o666);
            assert!(md("dev/loop0").file_type().is_block_device());
            assert_eq!(md("dev/loop0").gid(), 6);
        }
    }

    #[test]
    fn dotdot_names_are_refused() {
        for name in ["../evil", "a/../../evil", "./../evil"] {
            let dest = tempfile::tempdir().unwrap();
            let tar = RawTar::default().file(name, b"x").finish();
            let m = layer_err(run(&tar, dest.path(), &Options::default()));
            assert!(m.contains("escapes the target directory"), "{m}");
            assert!(m.contains(name), "{m}");
        }
    }

    #[test]
    fn absolute_names_are_stripped() {
        let dest = tempfile::tempdir().unwrap();
        let tar = RawTar::default()
            .file("/abs/file", b"x")
            .file("//twice", b"y")
            .finish();
        run(&tar, dest.path(), &Options::default()).unwrap();
        assert_eq!(std::fs::read(dest.path().join("abs/file")).unwrap(), b"x");
        assert_eq!(std::fs::read(dest.path().join("twice")).unwrap(), b"y");
    }

    #[test]
    fn symlinked_parents_stay_inside() {
        let outside = tempfile::tempdir().unwrap();
        let top = tempfile::tempdir().unwrap();
        let dest = top.path().join("a/b");
        std::fs::create_dir_all(&dest).unwrap();
        let out = outside.path().to_str().unwrap().to_string();
        let tar = RawTar::default()
            .symlink("root", "/")
            .symlink("up", "../../..")
            .symlink("abs", &out)
            .file("root/etc/escaped", b"1")
            .file("up/escaped2", b"2")
            .file("abs/escaped3", b"3")
            .finish();
        run(&tar, &dest, &Options::default()).unwrap();
        assert_eq!(std::fs::read(dest.join("etc/escaped")).unwrap(), b"1");
        assert_eq!(std::fs::read(dest.join("escaped2")).unwrap(), b"2");
        assert_eq!(
            std::fs::read(dest.join(out.trim_start_matches('/')).join("escaped3")).unwrap(),
            b"3"
        );
        assert!(!top.path().join("escaped2").exists());
        assert!(!top.path().join("a/escaped2").exists());
        assert!(!outside.path().join("escaped3").exists());
        assert!(!Path::new("/etc/escaped").exists());
    }

    #[test]
    fn file_replaces_symlink_without_writing_through() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"original").unwrap();
        let dest = tempfile::tempdir().unwrap();
        let tar = RawTar::default()
            .symlink("s", victim.to_str().unwrap())
            .file("s", b"payload")
            .symlink("d", outside.path().to_str().unwrap())
            .dir("d")
            .file("d/new", b"n")
            .finish();
        run(&tar, dest.path(), &Options::default()).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"original");
        let md = std::fs::symlink_metadata(dest.path().join("s")).unwrap();
        assert!(md.is_file());
        assert_eq!(std::fs::read(dest.path().join("s")).unwrap(), b"payload");
        assert!(std::fs::symlink_metadata(dest.path().join("d"))
            .unwrap()
            .is_dir());
        assert!(dest.path().join("d/new").exists());
        assert!(!outside.path().join("new").exists());
    }

    #[test]
    fn hardlink_escapes_are_refused() {
        let dest = tempfile::tempdir().unwrap();
        let tar = RawTar::default().hardlink("h", "../outside").finish();
        let m = layer_err(run(&tar, dest.path(), &Options::default()));
        assert!(
            m.contains("escapes the target directory") && m.contains("../outside"),
            "{m}"
        );

        // Through a symlinked directory the target is looked up inside the root, where it
        // does not exist: the host file is never linked.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        let dest = tempfile::tempdir().unwrap();
        let tar = RawTar::default()
            .symlink("d", outside.path().to_str().unwrap())
            .hardlink("h", "d/secret")
            .finish();
        let m = layer_err(run(&tar, dest.path(), &Options::default()));
        assert!(
            m.contains("'h'") && m.contains("d/secret") && m.contains("not in the layer"),
            "{m}"
        );
        assert_eq!(
            std::fs::metadata(outside.path().join("secret"))
                .unwrap()
                .nlink(),
            1
        );

        // And when the in-root target exists, that is what gets linked.
        let dest = tempfile::tempdir().unwrap();
        let tar = RawTar::default()
            .symlink("d", "/")
            .file("f", b"inside")
            .hardlink("h", "d/f")
            .finish();
        run(&tar, dest.path(), &Options::default()).unwrap();
        let ino = |p: &str| std::fs::metadata(dest.path().join(p)).unwrap().ino();
        assert_eq!(ino("h"), ino("f"));
    }

    #[test]
    fn replacing_existing_entries() {
        let dest = tempfile::tempdir().unwrap();
        let d = dest.path();
        std::fs::create_dir_all(d.join("dir/sub")).unwrap();
        std::fs::write(d.join("dir/sub/f"), b"x").unwrap();
        std::fs::write(d.join("dir/keep"), b"k").unwrap();
        std::fs::create_dir_all(d.join("becomes_file/x/y")).unwrap();
        std::fs::write(d.join("becomes_dir"), b"f").unwrap();
        let tar = RawTar::default()
            .add(E {
                mode: 0o711,
                ..E::new("dir", b'5')
            })
            .file("becomes_file", b"now a file")
            .dir("becomes_dir")
            .file("becomes_dir/child", b"c")
            .finish();
        run(&tar, d, &Options::default()).unwrap();
        assert_eq!(
            std::fs::metadata(d.join("dir")).unwrap().mode() & 0o7777,
            0o711
        );
        assert!(d.join("dir/sub/f").exists() && d.join("dir/keep").exists());
        assert_eq!(
            std::fs::read(d.join("becomes_file")).unwrap(),
            b"now a file"
        );
        assert_eq!(std::fs::read(d.join("becomes_dir/child")).unwrap(), b"c");
    }

    #[test]
    fn missing_hardlink_target() {
        let dest = tempfile::tempdir().unwrap();
        let tar = RawTar::default().hardlink("a/link", "b/target").finish();
        let m = layer_err(run(&tar, dest.path(), &Options::default()));
        assert!(m.contains("a/link") && m.contains("b/target"), "{m}");
    }

    #[test]
    fn overlay_whiteouts() {
        require_root!();
        let dest = tempfile::tempdir().unwrap();
        let d = dest.path();
        let tar = RawTar::default()
            .dir("a")
            .file("a/.wh.gone", b"")
            .file("b/.wh..wh..opq", b"")
            .file("b/kept", b"k")
            .file(".wh..wh.plnk/123", b"")
            .finish();
        let s = run(&tar, d, &Options::default()).unwrap();
        assert_eq!(s.entries, 2);
        let md = std::fs::symlink_metadata(d.join("a/gone")).unwrap();
        assert!(md.file_type().is_char_device());
        assert_eq!((md.rdev(), md.mode() & 0o7777), (0, 0));
        assert!(!d.join("a/.wh.gone").exists());
        assert_eq!(
            xattr::get(d.join("b"), "trusted.overlay.opaque").unwrap(),
            Some(b"y".to_vec())
        );
        assert!(!d.join("b/.wh..wh..opq").exists());
        assert_eq!(std::fs::read(d.join("b/kept")).unwrap(), b"k");
        assert!(!d.join(".wh..wh.plnk").exists());
    }

    #[test]
    fn applied_whiteouts() {
        for opq_first in [true, false] {
            let dest = tempfile::tempdir().unwrap();
            let d = dest.path();
            std::fs::create_dir_all(d.join("opq/sub/deeper")).unwrap();
            std::fs::write(d.join("opq/old"), b"o").unwrap();
            std::fs::write(d.join("opq/sub/old"), b"o").unwrap();
            std::fs::write(d.join("opq/sub/deeper/old"), b"o").unwrap();
            std::fs::create_dir_all(d.join("gone_dir/x")).unwrap();
            std::fs::write(d.join("gone_file"), b"g").unwrap();
            std::fs::write(d.join("stays"), b"s").unwrap();
            let mut t = RawTar::default();
            if opq_first {
                t.file("opq/.wh..wh..opq", b"");
            }
            t.file("opq/new", b"n").file("opq/sub/new", b"n");
            if !opq_first {
                t.file("opq/.wh..wh..opq", b"");
            }
            t.file(".wh.gone_dir", b"")
                .file(".wh.gone_file", b"")
                .file("nodir/.wh.nothing", b"");
            let s = run(&t.finish(), d, &apply()).unwrap();
            assert_eq!(s.entries, 2);
            let (snap, _) = snapshot(d);
            let names: Vec<&str> = snap.keys().map(|s| s.as_str()).collect();
            assert_eq!(
                names,
                vec!["opq", "opq/new", "opq/sub", "opq/sub/new", "stays"],
                "opq_first={opq_first}"
            );
        }
    }

    #[test]
    fn parent_cache_is_dropped_when_directories_go() {
        let dest = tempfile::tempdir().unwrap();
        let d = dest.path();
        std::fs::create_dir_all(d.join("o/old")).unwrap();
        std::fs::write(d.join("o/old/zzz"), b"z").unwrap();
        let tar = RawTar::default()
            .file("o/old/.wh.zzz", b"")
            .file("o/.wh..wh..opq", b"")
            .file("o/old/new", b"n")
            .file("r/sub/f1", b"1")
            .file("r/sub", b"now a file")
            .finish();
        run(&tar, d, &apply()).unwrap();
        assert_eq!(std::fs::read(d.join("o/old/new")).unwrap(), b"n");
        assert_eq!(std::fs::read(d.join("r/sub")).unwrap(), b"now a file");

        // A directory replaced from the root (by a file, then a directory again): the cached
        // fd of its old subdirectory must not be reused.
        let dest = tempfile::tempdir().unwrap();
        let tar = RawTar::default()
            .file("a/b/f", b"1")
            .file("a", b"file")
            .dir("a")
            .file("a/b/x", b"2")
            .finish();
        run(&tar, dest.path(), &Options::default()).unwrap();
        assert_eq!(std::fs::read(dest.path().join("a/b/x")).unwrap(), b"2");
        assert!(!dest.path().join("a/b/f").exists());
    }

    #[test]
    fn invalid_whiteout_names() {
        let dest = tempfile::tempdir().unwrap();
        let tar = RawTar::default().file("a/.wh...", b"").finish();
        let m = layer_err(run(&tar, dest.path(), &apply()));
        assert!(m.contains("not a valid whiteout"), "{m}");
    }

    #[test]
    fn compressed_layers_and_digests() {
        let tar = RawTar::default()
            .file("f", &vec![7u8; 300_000])
            .dir("d")
            .finish();
        for c in [Compression::Gzip, Compression::Zstd] {
            let blob = compress(c, &tar);
            let dest = tempfile::tempdir().unwrap();
            let opts = Options {
                expect_digest: Some(sha256(&blob)),
                expect_diff_id: Some(sha256(&tar)),
                ..Options::default()
            };
            let s = run(&blob, dest.path(), &opts).unwrap();
            assert_eq!(s.compression, c);
            assert_eq!(
                (s.size, s.uncompressed_size),
                (blob.len() as u64, tar.len() as u64)
            );
            assert_eq!(std::fs::read(dest.path().join("f")).unwrap().len(), 300_000);

            // Truncated streams.
            for cut in [blob.len() / 2, blob.len() - 4] {
                let dest = tempfile::tempdir().unwrap();
                let m = layer_err(run(&blob[..cut], dest.path(), &Options::default()));
                assert!(m.contains(&format!("{} stream truncated", c.name())), "{m}");
            }
            // Digest mismatches.
            let dest = tempfile::tempdir().unwrap();
            let opts = Options {
                expect_digest: Some(sha256(b"other")),
                ..Options::default()
            };
            let m = layer_err(run(&blob, dest.path(), &opts));
            assert!(
                m.starts_with("digest mismatch: expected") && m.contains(&sha256(&blob)),
                "{m}"
            );
            let opts = Options {
                expect_diff_id: Some(sha256(b"other")),
                ..Options::default()
            };
            let m = layer_err(run(&blob, dest.path(), &opts));
            assert!(m.contains(&sha256(&tar)), "{m}");
            // A truncated download with an expected digest reports the mismatch.
            let opts = Options {
                expect_digest: Some(sha256(&blob)),
                ..Options::default()
            };
            let m = layer_err(run(
                &blob[..blob.len() / 2],
                tempfile::tempdir().unwrap().path(),
                &opts,
            ));
            assert!(
                m.starts_with("digest mismatch") && m.contains("truncated"),
                "{m}"
            );
        }
    }

    #[test]
    fn garbage_and_truncated_tar() {
        let dest = tempfile::tempdir().unwrap();
        let m = layer_err(run(&vec![0x5a; 4096], dest.path(), &Options::default()));
        assert!(m.contains("layer is corrupt"), "{m}");
        let m = layer_err(run(
            &[0x1f, 0x8b, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
            dest.path(),
            &Options::default(),
        ));
        assert!(m.contains("layer is corrupt: gzip"), "{m}");
        let tar = RawTar::default().file("f", &vec![1u8; 10_000]).finish();
        let m = layer_err(run(&tar[..5000], dest.path(), &Options::default()));
        assert!(m.contains("truncated in 'f'"), "{m}");
        let gz = compress(Compression::Gzip, &tar[..5000]);
        let m = layer_err(run(&gz, dest.path(), &Options::default()));
        assert!(m.contains("truncated in 'f'"), "{m}");
    }

    #[test]
    fn trailing_bytes_are_hashed() {
        let mut tar = RawTar::default().file("f", b"x").finish();
        tar.extend_from_slice(&[0u8; 8192]);
        let dest = tempfile::tempdir().unwrap();
        let s = run(&tar, dest.path(), &Options::default()).unwrap();
        assert_eq!(s.diff_id, sha256(&tar));
        assert_eq!(s.uncompressed_size, tar.len() as u64);
    }

    #[test]
    fn fd_range_and_blob_out() {
        let tar = RawTar::default().file("f", b"ranged").finish();
        let blob = compress(Compression::Gzip, &tar);
        let mut container = b"HEADER".to_vec();
        container.extend_from_slice(&blob);
        container.extend_from_slice(b"TRAILER");
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("bundle");
        std::fs::write(&src, &container).unwrap();
        let file = File::open(&src).unwrap();
        let dest = tmp.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let opts = Options {
            offset: 6,
            length: Some(blob.len() as u64),
            blob_out: Some(tmp.path().join("blob")),
            ..Options::default()
        };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        let s = extract_layer(&Source::Fd(fd), &dest, &opts).unwrap();
        assert_eq!(s.digest, sha256(&blob));
        assert_eq!(std::fs::read(tmp.path().join("blob")).unwrap(), blob);
        assert_eq!(std::fs::read(dest.join("f")).unwrap(), b"ranged");
        // The caller's fd offset is untouched.
        assert_eq!(rustix::fs::tell(&file).unwrap(), 0);
        // A range past the end of the file is a truncated layer.
        let opts = Options {
            offset: 6,
            length: Some(container.len() as u64),
            ..Options::default()
        };
        let m = layer_err(extract_layer(
            &Source::Path(src),
            &tmp.path().join("dest"),
            &opts,
        ));
        assert!(m.contains("truncated"), "{m}");
    }

    #[test]
    fn long_names_and_pax() {
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(150));
        let dest = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o600);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        run(&tar, dest.path(), &Options::default()).unwrap();
        assert_eq!(std::fs::read(dest.path().join(&long)).unwrap(), b"abc");
    }
}

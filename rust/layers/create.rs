//! Writing a layer from a directory tree: an fd-relative walk that never follows symlinks,
//! entries sorted by path, a reproducible PAX tar (numeric owners, clamped mtimes, no atime or
//! ctime), overlayfs whiteouts turned into OCI `.wh.` entries, compression, and both digests
//! computed in the same pass.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::compress::{Compression, Encoder};
use super::stream::HashWriter;
use super::tarfmt::{self, Header};
use super::{show, Error, IoContext, Result};
use crate::digest::format_digest;
use crate::sys;

#[derive(Debug, Clone)]
pub struct Options {
    pub compression: Compression,
    pub level: Option<i32>,
    pub overlay_upper: bool,
    pub source_date_epoch: Option<i64>,
}

#[derive(Debug)]
pub struct Summary {
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
    pub uncompressed_size: u64,
    pub entries: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NodeKind {
    File,
    Dir,
    Symlink,
    Char,
    Block,
    Fifo,
    /// An overlayfs whiteout (0/0 char device) already renamed to `.wh.<name>`.
    Whiteout,
}

struct Node {
    path: Vec<u8>,
    kind: NodeKind,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: i64,
    dev: u64,
    ino: u64,
    nlink: u64,
    rdev: u64,
    link: Vec<u8>,
    opaque: bool,
}

const OPAQUE: &[u8] = b".wh..wh..opq";

/// Write a layer of `src_dir` to `out` (created or truncated, fsynced before returning).
pub fn create_layer(src_dir: &Path, out: &Path, opts: &Options) -> Result<Summary> {
    let root = rfs::open(
        src_dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("open {}", src_dir.display()))?;
    let root_opaque = opts.overlay_upper && is_opaque(root.as_fd())?;
    // Create the output first so that, should it lie inside the tree, the walk can skip it.
    let file = File::create(out).ctx(|| format!("create {}", out.display()))?;
    let st = rfs::fstat(&file).ctx(|| format!("stat {}", out.display()))?;
    let mut nodes = Vec::new();
    let walk_fd = rustix::io::fcntl_dupfd_cloexec(&root, 0).ctx(|| "dup".into())?;
    let walk_opts = Walk {
        overlay: opts.overlay_upper,
        skip: (st.st_dev, st.st_ino),
    };
    walk(walk_fd, b"", &mut nodes, &walk_opts)?;
    nodes.sort_unstable_by(|a, b| a.path.cmp(&b.path));

    let threads = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let blob = HashWriter::new(BufWriter::with_capacity(1 << 20, file));
    let enc = Encoder::new(opts.compression, opts.level, threads, blob)
        .ctx(|| "start compressor".into())?;
    let mut tar = HashWriter::new(enc);
    let mut w = Writer {
        scratch: Vec::new(),
        buf: vec![0u8; 1 << 20],
        entries: 0,
        epoch: opts.source_date_epoch,
    };
    let werr = |e| Error::io(format!("write {}", out.display()), e);

    if root_opaque {
        w.marker(&mut tar, OPAQUE).map_err(werr)?;
    }
    let mut first_link: HashMap<(u64, u64), usize> = HashMap::new();
    for i in 0..nodes.len() {
        let n = &nodes[i];
        match n.kind {
            NodeKind::Dir => {
                let mut name = n.path.clone();
                name.push(b'/');
                w.header(&mut tar, n, &name, b'5', 0, b"", &[])
                    .map_err(werr)?;
                if n.opaque {
                    name.extend_from_slice(OPAQUE);
                    w.marker(&mut tar, &name).map_err(werr)?;
                }
            }
            NodeKind::File => {
                if n.nlink > 1 {
                    if let Some(&j) = first_link.get(&(n.dev, n.ino)) {
                        w.header(&mut tar, n, &n.path, b'1', 0, &nodes[j].path, &[])
                            .map_err(werr)?;
                        continue;
                    }
                    first_link.insert((n.dev, n.ino), i);
                }
                w.file(&mut tar, root.as_fd(), n, out)?;
            }
            NodeKind::Symlink => w
                .header(&mut tar, n, &n.path, b'2', 0, &n.link, &[])
                .map_err(werr)?,
            NodeKind::Char => w
                .header(&mut tar, n, &n.path, b'3', 0, b"", &[])
                .map_err(werr)?,
            NodeKind::Block => w
                .header(&mut tar, n, &n.path, b'4', 0, b"", &[])
                .map_err(werr)?,
            NodeKind::Fifo => w
                .header(&mut tar, n, &n.path, b'6', 0, b"", &[])
                .map_err(werr)?,
            NodeKind::Whiteout => w.marker(&mut tar, &n.path).map_err(werr)?,
        }
    }
    tarfmt::write_end(&mut tar).map_err(werr)?;
    let diff_id = format_digest(tar.hash);
    let uncompressed_size = tar.count;
    let blob = tar.inner.finish().map_err(werr)?;
    let file = blob.inner.into_inner().map_err(|e| werr(e.into_error()))?;
    // A pipe or terminal (`pyrun export > pipe`) cannot be fsynced (EINVAL): nothing to make
    // durable there.
    match file.sync_all() {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        r => r.ctx(|| format!("fsync {}", out.display()))?,
    }
    Ok(Summary {
        digest: format_digest(blob.hash),
        diff_id,
        size: blob.count,
        uncompressed_size,
        entries: w.entries,
    })
}

struct Writer {
    scratch: Vec<u8>,
    buf: Vec<u8>,
    entries: u64,
    epoch: Option<i64>,
}

impl Writer {
    #[allow(clippy::too_many_arguments)]
    fn header<W: Write>(
        &mut self,
        w: &mut W,
        n: &Node,
        name: &[u8],
        typeflag: u8,
        size: u64,
        link: &[u8],
        xattrs: &[(&[u8], &[u8])],
    ) -> std::io::Result<()> {
        let mtime = match self.epoch {
            Some(e) => n.mtime.min(e),
            None => n.mtime,
        };
        let (dev_major, dev_minor) = (rfs::major(n.rdev), rfs::minor(n.rdev));
        let h = Header {
            path: name,
            typeflag,
            mode: n.mode,
            uid: n.uid as u64,
            gid: n.gid as u64,
            size,
            mtime,
            link,
            dev_major,
            dev_minor,
            xattrs,
        };
        tarfmt::write_header(w, &h, &mut self.scratch)?;
        self.entries += 1;
        Ok(())
    }

    /// An empty marker file: a whiteout or an opaque-directory marker (mode 0, owner 0, mtime 0).
    fn marker<W: Write>(&mut self, w: &mut W, name: &[u8]) -> std::io::Result<()> {
        let h = Header {
            path: name,
            typeflag: b'0',
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            link: b"",
            dev_major: 0,
            dev_minor: 0,
            xattrs: &[],
        };
        tarfmt::write_header(w, &h, &mut self.scratch)?;
        self.entries += 1;
        Ok(())
    }

    fn file<W: Write>(
        &mut self,
        w: &mut W,
        root: BorrowedFd<'_>,
        n: &Node,
        out: &Path,
    ) -> Result<()> {
        let fd = rfs::openat2(
            root,
            &n.path[..],
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .ctx(|| format!("open '{}'", show(&n.path)))?;
        let cap = sys::get_xattr_fd(fd.as_fd(), c"security.capability")
            .ctx(|| format!("read xattrs of '{}'", show(&n.path)))?;
        let xattrs: Vec<(&[u8], &[u8])> = match &cap {
            Some(v) => vec![(&b"security.capability"[..], &v[..])],
            None => Vec::new(),
        };
        let werr = |e| Error::io(format!("write {}", out.display()), e);
        self.header(w, n, &n.path, b'0', n.size, b"", &xattrs)
            .map_err(werr)?;
        let mut f = File::from(fd);
        let mut left = n.size;
        while left > 0 {
            let want = self.buf.len().min(left.min(usize::MAX as u64) as usize);
            let got = match f.read(&mut self.buf[..want]) {
                Ok(0) => {
                    return Err(Error::layer(format!(
                        "'{}' shrank while the layer was being written",
                        show(&n.path)
                    )))
                }
                Ok(k) => k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(format!("read '{}'", show(&n.path)), e)),
            };
            w.write_all(&self.buf[..got]).map_err(werr)?;
            left -= got as u64;
        }
        tarfmt::write_padding(w, n.size).map_err(werr)?;
        Ok(())
    }
}

fn is_opaque(dir: BorrowedFd<'_>) -> Result<bool> {
    for name in [c"trusted.overlay.opaque", c"user.overlay.opaque"] {
        match sys::get_xattr_fd(dir, name) {
            Ok(Some(v)) if v == b"y" => return Ok(true),
            Ok(_) => {}
            // Reading trusted.* needs CAP_SYS_ADMIN; without it the attribute is invisible.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            Err(e) => return Err(Error::io("read overlay xattrs", e)),
        }
    }
    Ok(false)
}

/// Collect every entry below `dir` (which it consumes), depth first, without following links.
struct Walk {
    overlay: bool,
    /// (dev, ino) of the output file, never included.
    skip: (u64, u64),
}

fn walk(dir: OwnedFd, prefix: &[u8], out: &mut Vec<Node>, opts: &Walk) -> Result<()> {
    let overlay = opts.overlay;
    let dfd = rustix::io::fcntl_dupfd_cloexec(&dir, 0).ctx(|| "dup".into())?;
    let mut rd = rfs::Dir::new(dir).ctx(|| format!("read directory '{}'", show(prefix)))?;
    let mut names = Vec::new();
    while let Some(ent) = rd.read() {
        let ent = ent.ctx(|| format!("read directory '{}'", show(prefix)))?;
        let name = ent.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    drop(rd);
    for name in names {
        let st = match rfs::statat(&dfd, &name[..], AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => continue,
            Err(e) => {
                return Err(Error::io(
                    format!("stat '{}'", show(&join(prefix, &name))),
                    e.into(),
                ))
            }
        };
        let ft = FileType::from_raw_mode(st.st_mode);
        let kind = match ft {
            FileType::RegularFile => NodeKind::File,
            FileType::Directory => NodeKind::Dir,
            FileType::Symlink => NodeKind::Symlink,
            FileType::CharacterDevice if overlay && st.st_rdev == 0 => NodeKind::Whiteout,
            FileType::CharacterDevice => NodeKind::Char,
            FileType::BlockDevice => NodeKind::Block,
            FileType::Fifo => NodeKind::Fifo,
            _ => continue, // sockets
        };
        if (st.st_dev, st.st_ino) == opts.skip {
            continue;
        }
        let path = if kind == NodeKind::Whiteout {
            let mut n = b".wh.".to_vec();
            n.extend_from_slice(&name);
            join(prefix, &n)
        } else {
            join(prefix, &name)
        };
        let mut node = Node {
            path,
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: if kind == NodeKind::File {
                st.st_size as u64
            } else {
                0
            },
            mtime: st.st_mtime,
            dev: st.st_dev,
            ino: st.st_ino,
            nlink: st.st_nlink as u64,
            rdev: st.st_rdev,
            link: Vec::new(),
            opaque: false,
        };
        match kind {
            NodeKind::Symlink => {
                node.link = rfs::readlinkat(&dfd, &name[..], Vec::new())
                    .ctx(|| format!("readlink '{}'", show(&node.path)))?
                    .into_bytes();
            }
            NodeKind::Dir => {
                let sub = rfs::openat(
                    &dfd,
                    &name[..],
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .ctx(|| format!("open '{}'", show(&node.path)))?;
                node.opaque = overlay && is_opaque(sub.as_fd())?;
                let child_prefix = node.path.clone();
                out.push(node);
                walk(sub, &child_prefix, out, opts)?;
                continue;
            }
            _ => {}
        }
        out.push(node);
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::extract::{self, Whiteouts};
    use crate::layers::stream::Source;
    use crate::layers::tarfmt::{Entry, Kind, TarReader};
    use crate::layers::testutil::{sha256, snapshot};
    use crate::require_root;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    fn opts(c: Compression) -> Options {
        Options {
            compression: c,
            level: None,
            overlay_upper: false,
            source_date_epoch: None,
        }
    }

    fn set_mtime(p: &Path, t: i64) {
        let ts = extract::tests_support::timestamps(t);
        rfs::utimensat(rfs::CWD, p, &ts, AtFlags::SYMLINK_NOFOLLOW).unwrap();
    }

    /// A tree with every kind of entry; owners and capabilities only when root.
    fn sample_tree(root: &Path) {
        let p = |s: &str| root.join(s);
        std::fs::create_dir_all(p("usr/bin")).unwrap();
        std::fs::create_dir_all(p("a-dir/deep/er")).unwrap();
        std::fs::write(p("usr/bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(p("usr/bin/tool"), std::fs::Permissions::from_mode(0o4755))
            .unwrap();
        std::fs::write(p("a-dir/deep/er/data"), vec![0xabu8; 70_000]).unwrap();
        std::fs::write(p("a"), b"top").unwrap();
        std::fs::hard_link(p("a"), p("usr/a-link")).unwrap();
        symlink("../a", p("usr/rel")).unwrap();
        symlink("/etc/passwd", p("abs-link")).unwrap();
        let long = format!("{}/{}", "x".repeat(110), "y".repeat(120));
        std::fs::create_dir_all(p(&long)).unwrap();
        std::fs::write(p(&format!("{long}/file")), b"long").unwrap();
        rustix::fs::mknodat(
            rfs::CWD,
            p("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        std::fs::set_permissions(p("a-dir"), std::fs::Permissions::from_mode(0o2750)).unwrap();
        xattr::set(p("a"), "user.ignored", b"not in layers").unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(p("sock")).unwrap();
        if crate::layers::testutil::is_root() {
            std::os::unix::fs::lchown(p("usr/bin/tool"), Some(1000), Some(2000)).unwrap();
            std::fs::set_permissions(p("usr/bin/tool"), std::fs::Permissions::from_mode(0o4755))
                .unwrap();
            std::os::unix::fs::lchown(p("usr/rel"), Some(7), Some(8)).unwrap();
            let cap: &[u8] = &[1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            xattr::set(p("usr/bin/tool"), "security.capability", cap).unwrap();
            let _ = rustix::fs::mknodat(
                rfs::CWD,
                p("null"),
                FileType::CharacterDevice,
                Mode::from_raw_mode(0o666),
                rfs::makedev(1, 3),
            );
        }
        for (i, rel) in [
            "usr/bin/tool",
            "a",
            "usr/rel",
            "fifo",
            "a-dir/deep/er/data",
            "usr/bin",
            "usr",
            "a-dir",
        ]
        .iter()
        .enumerate()
        {
            set_mtime(&p(rel), 1_500_000_000 + i as i64 * 1000);
        }
    }

    type Listed = (Vec<u8>, Kind, u32, i64, Vec<u8>);

    fn entries(tar: &[u8]) -> Vec<Listed> {
        let mut r = TarReader::new(tar);
        let mut e = Entry::default();
        let mut out = Vec::new();
        while r.next(&mut e).unwrap() {
            out.push((e.path.clone(), e.kind, e.mode, e.mtime, e.link.clone()));
        }
        out
    }

    #[test]
    fn roundtrip_preserves_the_tree() {
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let src = tempfile::tempdir().unwrap();
            sample_tree(src.path());
            let tmp = tempfile::tempdir().unwrap();
            let out = tmp.path().join("layer");
            let s = create_layer(src.path(), &out, &opts(c)).unwrap();
            let blob = std::fs::read(&out).unwrap();
            assert_eq!(s.digest, sha256(&blob));
            assert_eq!(s.size, blob.len() as u64);

            let dest = tmp.path().join("dest");
            std::fs::create_dir(&dest).unwrap();
            let x = extract::extract_layer(&Source::Path(out), &dest, &extract::Options::default())
                .unwrap();
            assert_eq!((x.digest, x.diff_id), (s.digest.clone(), s.diff_id.clone()));
            assert_eq!(x.compression, c);
            assert_eq!(x.entries, s.entries);
            assert!(x.warnings.is_empty(), "{:?}", x.warnings);

            let (mut want, want_links) = snapshot(src.path());
            want.remove("sock");
            for v in want.values_mut() {
                v.xattrs.retain(|(k, _)| k == "security.capability");
            }
            let (got, got_links) = snapshot(&dest);
            assert_eq!(
                want.keys().collect::<Vec<_>>(),
                got.keys().collect::<Vec<_>>()
            );
            for (k, w) in &want {
                assert_eq!(w, &got[k], "{k} ({c:?})");
            }
            assert_eq!(want_links, got_links);
            assert!(!want_links.is_empty());
        }
    }

    #[test]
    fn capability_and_owner_roundtrip() {
        require_root!();
        let src = tempfile::tempdir().unwrap();
        sample_tree(src.path());
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("layer");
        create_layer(src.path(), &out, &opts(Compression::None)).unwrap();
        let tar = std::fs::read(&out).unwrap();
        let mut r = TarReader::new(&tar[..]);
        let mut e = Entry::default();
        let mut seen = false;
        while r.next(&mut e).unwrap() {
            if e.path == b"usr/bin/tool" {
                assert_eq!((e.uid, e.gid, e.mode), (1000, 2000, 0o4755));
                assert_eq!(e.xattrs.len(), 1);
                assert_eq!(e.xattrs[0].0, b"security.capability");
                seen = true;
            }
        }
        assert!(seen);
        let dest = tmp.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        extract::extract_layer(&Source::Path(out), &dest, &extract::Options::default()).unwrap();
        let md = std::fs::metadata(dest.join("usr/bin/tool")).unwrap();
        assert_eq!(
            (md.uid(), md.gid(), md.mode() & 0o7777),
            (1000, 2000, 0o4755)
        );
        assert!(xattr::get(dest.join("usr/bin/tool"), "security.capability")
            .unwrap()
            .is_some());
    }

    #[test]
    fn layout_is_sorted_pax_and_numeric() {
        let src = tempfile::tempdir().unwrap();
        sample_tree(src.path());
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("layer.tar");
        create_layer(src.path(), &out, &opts(Compression::None)).unwrap();
        let tar = std::fs::read(&out).unwrap();
        let list = entries(&tar);
        let names: Vec<Vec<u8>> = list.iter().map(|e| e.0.clone()).collect();
        let mut sorted = names.clone();
        sorted.sort_by(|a, b| {
            a.strip_suffix(b"/")
                .unwrap_or(a)
                .cmp(b.strip_suffix(b"/").unwrap_or(b))
        });
        assert_eq!(names, sorted);
        assert!(names.contains(&b"usr/".to_vec()), "directories end in /");
        assert!(
            !names.iter().any(|n| n.starts_with(b"sock")),
            "sockets are skipped"
        );
        assert!(
            !names.iter().any(|n| n.is_empty() || n == b"./"),
            "the root is not emitted"
        );
        let link = list.iter().find(|e| e.0 == b"usr/a-link").unwrap();
        assert_eq!((link.1, &link.4[..]), (Kind::Hardlink, &b"a"[..]));
        // Empty uname/gname in every ustar header; no atime/ctime records.
        let mut off = 0;
        while off + 512 <= tar.len() && tar[off..off + 512].iter().any(|&b| b != 0) {
            let h = &tar[off..off + 512];
            assert!(h[265..297].iter().all(|&b| b == 0) && h[297..329].iter().all(|&b| b == 0));
            let size = crate::layers::tarfmt::tests_support::header_size(h);
            if h[156] == b'x' {
                let body = &tar[off + 512..off + 512 + size as usize];
                let text = String::from_utf8_lossy(body);
                assert!(!text.contains("atime") && !text.contains("ctime"), "{text}");
            }
            off += 512 + size.div_ceil(512) as usize * 512;
        }
    }

    #[test]
    fn output_inside_the_tree_is_skipped() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("f"), b"x").unwrap();
        let out = src.path().join("layer.tar");
        let s = create_layer(src.path(), &out, &opts(Compression::None)).unwrap();
        assert_eq!(s.entries, 1);
        let list = entries(&std::fs::read(&out).unwrap());
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].0, b"f");
    }

    #[test]
    fn reproducible_and_clamped() {
        let src = tempfile::tempdir().unwrap();
        sample_tree(src.path());
        let tmp = tempfile::tempdir().unwrap();
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let o = Options {
                source_date_epoch: Some(1_500_002_500),
                ..opts(c)
            };
            let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
            let sa = create_layer(src.path(), &a, &o).unwrap();
            // Touch atimes in between; they must not matter.
            let _ = std::fs::read(src.path().join("a")).unwrap();
            let sb = create_layer(src.path(), &b, &o).unwrap();
            assert_eq!(
                std::fs::read(&a).unwrap(),
                std::fs::read(&b).unwrap(),
                "{c:?}"
            );
            assert_eq!(sa.digest, sb.digest);
            if c == Compression::Gzip {
                let gz = std::fs::read(&a).unwrap();
                assert_eq!(&gz[4..8], &[0, 0, 0, 0], "gzip mtime is zero");
                assert_eq!(gz[3] & 0x08, 0, "no file name in the gzip header");
                assert_eq!(gz[9], 255);
            }
        }
        create_layer(
            src.path(),
            &tmp.path().join("t"),
            &Options {
                source_date_epoch: Some(1_500_002_500),
                ..opts(Compression::None)
            },
        )
        .unwrap();
        let list = entries(&std::fs::read(tmp.path().join("t")).unwrap());
        let mt = |n: &[u8]| list.iter().find(|e| e.0 == n).unwrap().3;
        assert_eq!(mt(b"usr/bin/tool"), 1_500_000_000);
        assert_eq!(mt(b"a"), 1_500_001_000);
        assert_eq!(
            mt(b"usr/"),
            1_500_002_500,
            "later mtimes are clamped to the epoch"
        );
    }

    #[test]
    fn overlay_upper_whiteouts_both_directions() {
        require_root!();
        let upper = tempfile::tempdir().unwrap();
        let u = upper.path();
        std::fs::create_dir_all(u.join("etc/opaque")).unwrap();
        std::fs::write(u.join("etc/opaque/kept"), b"k").unwrap();
        xattr::set(u.join("etc/opaque"), "trusted.overlay.opaque", b"y").unwrap();
        rustix::fs::mknodat(
            rfs::CWD,
            u.join("etc/deleted"),
            FileType::CharacterDevice,
            Mode::empty(),
            0,
        )
        .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("layer.tar");
        let o = Options {
            overlay_upper: true,
            ..opts(Compression::None)
        };
        create_layer(u, &out, &o).unwrap();
        let tar = std::fs::read(&out).unwrap();
        let list = entries(&tar);
        let names: Vec<String> = list
            .iter()
            .map(|e| String::from_utf8_lossy(&e.0).into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "etc/",
                "etc/.wh.deleted",
                "etc/opaque/",
                "etc/opaque/.wh..wh..opq",
                "etc/opaque/kept"
            ]
        );
        let wh = &list[1];
        assert_eq!((wh.1, wh.2, wh.3), (Kind::File, 0, 0));

        // Back to overlay form.
        let dest = tmp.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        extract::extract_layer(
            &Source::Path(out.clone()),
            &dest,
            &extract::Options::default(),
        )
        .unwrap();
        let md = std::fs::symlink_metadata(dest.join("etc/deleted")).unwrap();
        assert_eq!(md.rdev(), 0);
        assert_eq!(
            xattr::get(dest.join("etc/opaque"), "trusted.overlay.opaque").unwrap(),
            Some(b"y".to_vec())
        );
        let again = tmp.path().join("again.tar");
        create_layer(&dest, &again, &o).unwrap();
        assert_eq!(
            std::fs::read(&again).unwrap(),
            tar,
            "overlay dir -> layer -> overlay dir -> same layer"
        );

        // Applied onto a lower tree.
        let flat = tmp.path().join("flat");
        std::fs::create_dir_all(flat.join("etc/opaque")).unwrap();
        std::fs::write(flat.join("etc/opaque/lower"), b"l").unwrap();
        std::fs::write(flat.join("etc/deleted"), b"d").unwrap();
        let ao = extract::Options {
            whiteouts: Whiteouts::Apply,
            ..extract::Options::default()
        };
        extract::extract_layer(&Source::Path(out), &flat, &ao).unwrap();
        assert!(!flat.join("etc/deleted").exists());
        assert!(!flat.join("etc/opaque/lower").exists());
        assert!(flat.join("etc/opaque/kept").exists());
    }
}

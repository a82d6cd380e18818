//! Test helpers: hand-built tar streams (including hostile names the tar crate's Builder would
//! refuse), compression, and a filesystem snapshot for comparing trees.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::compress::{Compression, Encoder};
use super::tarfmt::{self, Header};

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Skip the rest of a test that needs root, saying why.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::layers::testutil::is_root() {
            eprintln!("skipped: needs root (chown, mknod, trusted.* xattrs)");
            return;
        }
    };
}

/// Builds a tar stream entry by entry with raw names, written verbatim.
#[derive(Default)]
pub struct RawTar {
    pub buf: Vec<u8>,
    scratch: Vec<u8>,
}

pub struct E<'a> {
    pub name: &'a [u8],
    pub typeflag: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub data: &'a [u8],
    pub link: &'a [u8],
    pub dev: (u32, u32),
    pub xattrs: &'a [(&'a [u8], &'a [u8])],
}

impl<'a> E<'a> {
    pub fn new(name: &'a str, typeflag: u8) -> Self {
        E {
            name: name.as_bytes(),
            typeflag,
            mode: if typeflag == b'5' { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            data: b"",
            link: b"",
            dev: (0, 0),
            xattrs: &[],
        }
    }
}

impl RawTar {
    pub fn add(&mut self, e: E<'_>) -> &mut Self {
        let h = Header {
            path: e.name,
            typeflag: e.typeflag,
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            size: e.data.len() as u64,
            mtime: e.mtime,
            link: e.link,
            dev_major: e.dev.0,
            dev_minor: e.dev.1,
            xattrs: e.xattrs,
        };
        tarfmt::write_header(&mut self.buf, &h, &mut self.scratch).unwrap();
        self.buf.extend_from_slice(e.data);
        tarfmt::write_padding(&mut self.buf, e.data.len() as u64).unwrap();
        self
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.add(E {
            data,
            ..E::new(name, b'0')
        })
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.add(E::new(name, b'5'))
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.add(E {
            link: target.as_bytes(),
            mode: 0o777,
            ..E::new(name, b'2')
        })
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.add(E {
            link: target.as_bytes(),
            ..E::new(name, b'1')
        })
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.buf);
        tarfmt::write_end(&mut v).unwrap();
        v
    }
}

pub fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
    let mut e = Encoder::new(c, None, 1, Vec::new()).unwrap();
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    crate::digest::format_digest(sha2::Sha256::new_with_prefix(data))
}

/// One path's observable state.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Snap {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub content: Vec<u8>,
    pub rdev: u64,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// Snapshot of a tree: relative path → state, plus groups of hardlinked paths.
pub fn snapshot(root: &Path) -> (BTreeMap<String, Snap>, Vec<Vec<String>>) {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    fn rec(
        root: &Path,
        dir: &Path,
        out: &mut BTreeMap<String, Snap>,
        inodes: &mut BTreeMap<(u64, u64), Vec<String>>,
    ) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let ft = md.file_type();
            let (kind, content) = if ft.is_dir() {
                ("dir", Vec::new())
            } else if ft.is_symlink() {
                (
                    "symlink",
                    std::fs::read_link(&p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                )
            } else if ft.is_file() {
                ("file", std::fs::read(&p).unwrap())
            } else if ft.is_fifo() {
                ("fifo", Vec::new())
            } else if ft.is_char_device() {
                ("char", Vec::new())
            } else if ft.is_block_device() {
                ("block", Vec::new())
            } else {
                ("other", Vec::new())
            };
            let mut xattrs = Vec::new();
            if !ft.is_symlink() {
                if let Ok(names) = xattr_list(&p) {
                    for n in names {
                        if let Ok(Some(v)) = xattr::get(&p, &n) {
                            xattrs.push((n, v));
                        }
                    }
                }
            }
            xattrs.sort();
            if ft.is_file() && md.nlink() > 1 {
                inodes
                    .entry((md.dev(), md.ino()))
                    .or_default()
                    .push(rel.clone());
            }
            out.insert(
                rel,
                Snap {
                    kind,
                    mode: md.mode() & 0o7777,
                    uid: md.uid(),
                    gid: md.gid(),
                    mtime: md.mtime(),
                    content,
                    rdev: md.rdev(),
                    xattrs,
                },
            );
            if ft.is_dir() {
                rec(root, &p, out, inodes);
            }
        }
    }
    rec(root, root, &mut out, &mut inodes);
    let links = inodes.into_values().filter(|v| v.len() > 1).collect();
    (out, links)
}

fn xattr_list(p: &Path) -> std::io::Result<Vec<String>> {
    Ok(xattr::list(p)?
        .map(|n| n.to_string_lossy().into_owned())
        .collect())
}

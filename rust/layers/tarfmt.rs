//! The tar format as layers use it: a streaming reader (ustar/GNU/PAX headers, GNU long names,
//! PAX records with binary xattr values) over any `BufRead`, and a deterministic PAX writer.
//! Header field decoding (octal, base-256, ustar prefix) is delegated to the `tar` crate.

use std::io::{self, BufRead, Write};

use super::{show, Error, Result};

pub const BLOCK: usize = 512;
/// Upper bound for PAX and GNU long-name payloads kept in memory.
const MAX_META: u64 = 16 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Kind {
    #[default]
    File,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
    /// A typeflag this reader does not know; its data is skipped.
    Other(u8),
}

/// One entry's metadata, reused between entries to avoid allocations.
#[derive(Debug, Default)]
pub struct Entry {
    pub kind: Kind,
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub size: u64,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// `SCHILY.xattr.<name>` PAX records: (name, value).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// PAX records (and GNU long names) waiting for the entry they describe.
#[derive(Default)]
struct Pending {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<(i64, u32)>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    sparse: bool,
}

/// Streaming tar reader. Call `next`, then optionally `data`/`consume` to read the entry's
/// contents; whatever is not read is skipped by the following `next`.
pub struct TarReader<R> {
    r: R,
    offset: u64,
    remaining: u64,
    padding: u64,
    pending: Pending,
    scratch: Vec<u8>,
    seen_any: bool,
}

fn corrupt(msg: impl std::fmt::Display) -> Error {
    Error::layer(format!("layer is corrupt: {msg}"))
}

impl<R: BufRead> TarReader<R> {
    pub fn new(r: R) -> Self {
        TarReader {
            r,
            offset: 0,
            remaining: 0,
            padding: 0,
            pending: Pending::default(),
            scratch: Vec::new(),
            seen_any: false,
        }
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.r
    }

    /// Bytes of the tar stream consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn fill(&mut self) -> Result<&[u8]> {
        self.r
            .fill_buf()
            .map_err(|e| Error::io("read layer tar stream", e))
    }

    /// Read exactly one block; returns false on a clean EOF before the first byte.
    fn read_block(&mut self, block: &mut [u8; BLOCK]) -> Result<bool> {
        let mut got = 0;
        while got < BLOCK {
            let buf = self.fill()?;
            if buf.is_empty() {
                if got == 0 {
                    return Ok(false);
                }
                return Err(corrupt(format_args!(
                    "tar stream truncated inside a header at offset {}",
                    self.offset
                )));
            }
            let n = buf.len().min(BLOCK - got);
            block[got..got + n].copy_from_slice(&buf[..n]);
            self.r.consume(n);
            got += n;
            self.offset += n as u64;
        }
        Ok(true)
    }

    fn skip(&mut self, mut n: u64, what: &[u8]) -> Result<()> {
        while n > 0 {
            let buf = self.fill()?;
            if buf.is_empty() {
                return Err(corrupt(format_args!(
                    "tar stream truncated in '{}'",
                    show(what)
                )));
            }
            let k = (buf.len() as u64).min(n) as usize;
            self.r.consume(k);
            self.offset += k as u64;
            n -= k as u64;
        }
        Ok(())
    }

    /// Read a metadata payload (PAX records, GNU long name) of `size` bytes into `scratch`.
    fn read_meta(&mut self, size: u64) -> Result<()> {
        if size > MAX_META {
            return Err(corrupt(format_args!(
                "tar metadata record of {size} bytes at offset {}",
                self.offset
            )));
        }
        let mut data = std::mem::take(&mut self.scratch);
        data.clear();
        let mut left = size as usize;
        while left > 0 {
            let buf = self.fill()?;
            if buf.is_empty() {
                self.scratch = data;
                return Err(corrupt(format_args!(
                    "tar stream truncated in an extended header at offset {}",
                    self.offset
                )));
            }
            let n = buf.len().min(left);
            data.extend_from_slice(&buf[..n]);
            self.r.consume(n);
            self.offset += n as u64;
            left -= n;
        }
        self.scratch = data;
        let pad = padding(size);
        self.skip(pad, b"extended header")
    }

    /// Advance to the next entry. Returns `Ok(false)` at the end of the archive (a zero block, or
    /// EOF at a header boundary).
    pub fn next(&mut self, e: &mut Entry) -> Result<bool> {
        let rem = self.remaining + self.padding;
        self.remaining = 0;
        self.padding = 0;
        if rem > 0 {
            let path = std::mem::take(&mut e.path);
            let r = self.skip(rem, &path);
            e.path = path;
            r?;
        }
        let mut block = [0u8; BLOCK];
        loop {
            let header_offset = self.offset;
            if !self.read_block(&mut block)? {
                if !self.seen_any {
                    return Err(corrupt("the tar stream is empty"));
                }
                return Ok(false);
            }
            self.seen_any = true;
            if block.iter().all(|&b| b == 0) {
                return Ok(false);
            }
            verify_checksum(&block, header_offset)?;
            let h = tar::Header::from_byte_slice(&block);
            let num = |range: std::ops::Range<usize>, field: &str| -> Result<u64> {
                parse_numeric(&block[range]).ok_or_else(|| {
                    corrupt(format_args!(
                        "bad {field} field in the tar header at offset {header_offset}"
                    ))
                })
            };
            let size = match self.pending.size {
                Some(s) => s,
                None => num(124..136, "size")?,
            };
            let flag = block[156];
            match flag {
                b'x' => {
                    self.read_meta(size)?;
                    let data = std::mem::take(&mut self.scratch);
                    let r = parse_pax(&data, &mut self.pending, header_offset);
                    self.scratch = data;
                    r?;
                    continue;
                }
                b'g' => {
                    // Global PAX headers (e.g. git archive's comment) carry nothing layers use.
                    self.skip(size + padding(size), b"global header")?;
                    continue;
                }
                b'L' | b'K' => {
                    self.read_meta(size)?;
                    let end = self
                        .scratch
                        .iter()
                        .position(|&b| b == 0)
                        .unwrap_or(self.scratch.len());
                    let name = self.scratch[..end].to_vec();
                    if flag == b'L' {
                        self.pending.path = Some(name);
                    } else {
                        self.pending.link = Some(name);
                    }
                    continue;
                }
                _ => {}
            }
            let pending = std::mem::take(&mut self.pending);
            e.path.clear();
            match pending.path {
                Some(p) => e.path = p,
                None => e.path.extend_from_slice(&h.path_bytes()),
            }
            e.link.clear();
            match pending.link {
                Some(l) => e.link = l,
                None => {
                    if let Some(l) = h.link_name_bytes() {
                        e.link.extend_from_slice(&l);
                    }
                }
            }
            if pending.sparse || flag == b'S' {
                return Err(Error::layer(format!(
                    "layer entry '{}' is a GNU sparse file, which is not supported",
                    show(&e.path)
                )));
            }
            e.kind = match flag {
                b'0' | b'7' => Kind::File,
                b'\0' if e.path.ends_with(b"/") => Kind::Dir,
                b'\0' => Kind::File,
                b'1' => Kind::Hardlink,
                b'2' => Kind::Symlink,
                b'3' => Kind::Char,
                b'4' => Kind::Block,
                b'5' | b'D' => Kind::Dir,
                b'6' => Kind::Fifo,
                b'M' => {
                    return Err(Error::layer(format!(
                        "layer entry '{}' is a multi-volume continuation, which is not supported",
                        show(&e.path)
                    )))
                }
                other => Kind::Other(other),
            };
            e.size = size;
            e.mode = num(100..108, "mode")? as u32 & 0o7777;
            e.uid = match pending.uid {
                Some(u) => u,
                None => num(108..116, "uid")?,
            };
            e.gid = match pending.gid {
                Some(g) => g,
                None => num(116..124, "gid")?,
            };
            (e.mtime, e.mtime_nsec) = match pending.mtime {
                Some(t) => t,
                None => (num(136..148, "mtime")?.min(i64::MAX as u64) as i64, 0),
            };
            if matches!(e.kind, Kind::Char | Kind::Block) {
                e.dev_major = num(329..337, "devmajor")? as u32;
                e.dev_minor = num(337..345, "devminor")? as u32;
            } else {
                e.dev_major = 0;
                e.dev_minor = 0;
            }
            e.xattrs = pending.xattrs;
            // Links, devices, fifos and plain directories are header-only: some writers fill
            // in a size for them (e.g. a hardlink's target size) without writing data, so
            // their size is ignored, as Go's archive/tar does. GNU dumpdirs ('D') have data.
            let data = if b"123456".contains(&flag) { 0 } else { size };
            e.size = data;
            self.remaining = data;
            self.padding = padding(data);
            return Ok(true);
        }
    }

    /// The next piece of the current entry's data (empty when it is all read).
    pub fn data(&mut self, path: &[u8]) -> Result<&[u8]> {
        if self.remaining == 0 {
            return Ok(&[]);
        }
        let remaining = self.remaining;
        let buf = self.fill()?;
        if buf.is_empty() {
            return Err(corrupt(format_args!(
                "tar stream truncated in '{}' ({} bytes missing)",
                show(path),
                remaining
            )));
        }
        let n = (buf.len() as u64).min(remaining) as usize;
        Ok(&buf[..n])
    }

    /// Mark `n` bytes returned by `data` as used.
    pub fn consume(&mut self, n: usize) {
        self.r.consume(n);
        self.remaining -= n as u64;
        self.offset += n as u64;
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

fn verify_checksum(block: &[u8; BLOCK], offset: u64) -> Result<()> {
    let field = &block[148..156];
    let text: Vec<u8> = field
        .iter()
        .copied()
        .take_while(|&b| b != 0)
        .filter(|&b| b != b' ')
        .collect();
    let stored = std::str::from_utf8(&text)
        .ok()
        .and_then(|s| u64::from_str_radix(s, 8).ok());
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += b as u64;
        signed += (b as i8) as i64;
    }
    match stored {
        Some(s) if s == unsigned || s as i64 == signed => Ok(()),
        _ => Err(corrupt(format_args!(
            "invalid tar header at offset {offset} (checksum mismatch; not a tar stream?)"
        ))),
    }
}

/// A numeric header field: octal text padded with spaces or NULs (empty means 0), or GNU
/// base-256 when the high bit of the first byte is set (negative values are refused).
fn parse_numeric(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        if field[0] & 0x40 != 0 {
            return None;
        }
        let mut v: u64 = (field[0] & 0x3f) as u64;
        for &b in &field[1..] {
            v = v.checked_mul(256)? | b as u64;
        }
        return Some(v);
    }
    let text = field.split(|&b| b == 0).next().unwrap_or(&[]);
    let text = text.trim_ascii();
    if text.is_empty() {
        return Some(0);
    }
    if !text.iter().all(|b| (b'0'..=b'7').contains(b)) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(text).ok()?, 8).ok()
}

fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 20 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A PAX time: `[-]seconds[.fraction]`.
fn parse_time(v: &[u8]) -> Option<(i64, u32)> {
    let (neg, v) = match v.first() {
        Some(b'-') => (true, &v[1..]),
        _ => (false, v),
    };
    let (secs, frac) = match v.iter().position(|&b| b == b'.') {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => (v, &b""[..]),
    };
    let secs = parse_decimal(secs)? as i64;
    if !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut nsec = 0u32;
    for i in 0..9 {
        nsec = nsec * 10 + frac.get(i).map(|d| (d - b'0') as u32).unwrap_or(0);
    }
    if neg {
        if nsec > 0 {
            Some((-secs - 1, 1_000_000_000 - nsec))
        } else {
            Some((-secs, 0))
        }
    } else {
        Some((secs, nsec))
    }
}

/// Parse `"<len> <key>=<value>\n"` records. Values may hold any bytes, newlines included (binary
/// xattrs), so records are split by their length prefix, not by newlines.
fn parse_pax(data: &[u8], p: &mut Pending, offset: u64) -> Result<()> {
    let bad = || corrupt(format_args!("malformed PAX header at offset {offset}"));
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let sp = rest.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let len = parse_decimal(&rest[..sp]).ok_or_else(bad)? as usize;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad());
        }
        let kv = &rest[sp + 1..len - 1];
        rest = &rest[len..];
        let eq = kv.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        let (key, value) = (&kv[..eq], &kv[eq + 1..]);
        match key {
            b"path" => p.path = Some(value.to_vec()),
            b"linkpath" => p.link = Some(value.to_vec()),
            b"size" => p.size = Some(parse_decimal(value).ok_or_else(bad)?),
            b"uid" => p.uid = Some(parse_decimal(value).ok_or_else(bad)?),
            b"gid" => p.gid = Some(parse_decimal(value).ok_or_else(bad)?),
            b"mtime" => p.mtime = Some(parse_time(value).ok_or_else(bad)?),
            _ if key.starts_with(b"SCHILY.xattr.") => {
                p.xattrs
                    .push((key[b"SCHILY.xattr.".len()..].to_vec(), value.to_vec()));
            }
            _ if key.starts_with(b"GNU.sparse.") => p.sparse = true,
            _ => {}
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Writer

/// What to write for one entry. `path` already ends in `/` for directories.
pub struct Header<'a> {
    pub path: &'a [u8],
    pub typeflag: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: i64,
    pub link: &'a [u8],
    pub dev_major: u32,
    pub dev_minor: u32,
    pub xattrs: &'a [(&'a [u8], &'a [u8])],
}

const MAX_OCTAL_8: u64 = 0o7777777;
const MAX_OCTAL_12: u64 = 0o77777777777;

/// Write `h` as a ustar header, preceded by a PAX header when some field does not fit (long
/// path or link name, big size, uid or gid) or xattrs are present. Fields not used by layers
/// (uname, gname, atime, ctime) stay empty so the output depends only on the tree.
pub fn write_header<W: Write>(w: &mut W, h: &Header<'_>, scratch: &mut Vec<u8>) -> io::Result<u64> {
    let mut written = 0u64;
    scratch.clear();
    let split = split_ustar_path(h.path);
    if split.is_none() {
        pax_record(scratch, b"path", h.path);
    }
    if h.link.len() > 100 {
        pax_record(scratch, b"linkpath", h.link);
    }
    if h.size > MAX_OCTAL_12 {
        pax_record(scratch, b"size", h.size.to_string().as_bytes());
    }
    if h.uid > MAX_OCTAL_8 {
        pax_record(scratch, b"uid", h.uid.to_string().as_bytes());
    }
    if h.gid > MAX_OCTAL_8 {
        pax_record(scratch, b"gid", h.gid.to_string().as_bytes());
    }
    let mtime = h.mtime.max(0) as u64;
    if mtime > MAX_OCTAL_12 {
        pax_record(scratch, b"mtime", mtime.to_string().as_bytes());
    }
    for (name, value) in h.xattrs {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(name);
        pax_record(scratch, &key, value);
    }
    if !scratch.is_empty() {
        let base = h.path.strip_suffix(b"/").unwrap_or(h.path);
        let base = &base[base
            .iter()
            .rposition(|&b| b == b'/')
            .map(|i| i + 1)
            .unwrap_or(0)..];
        let mut name = b"PaxHeaders.0/".to_vec();
        name.extend_from_slice(&base[..base.len().min(100 - name.len())]);
        let block = ustar_block(
            &name,
            b"",
            b'x',
            0o644,
            0,
            0,
            scratch.len() as u64,
            0,
            b"",
            0,
            0,
        );
        w.write_all(&block)?;
        w.write_all(scratch)?;
        let pad = padding(scratch.len() as u64) as usize;
        w.write_all(&[0u8; BLOCK][..pad])?;
        written += (BLOCK + scratch.len() + pad) as u64;
    }
    let (prefix, name) = split.unwrap_or((b"", &h.path[..h.path.len().min(100)]));
    let link = &h.link[..h.link.len().min(100)];
    let block = ustar_block(
        name,
        prefix,
        h.typeflag,
        h.mode & 0o7777,
        h.uid.min(MAX_OCTAL_8),
        h.gid.min(MAX_OCTAL_8),
        h.size.min(MAX_OCTAL_12),
        mtime.min(MAX_OCTAL_12),
        link,
        h.dev_major,
        h.dev_minor,
    );
    w.write_all(&block)?;
    Ok(written + BLOCK as u64)
}

/// Zero padding after `size` bytes of entry data.
pub fn write_padding<W: Write>(w: &mut W, size: u64) -> io::Result<u64> {
    let pad = padding(size) as usize;
    w.write_all(&[0u8; BLOCK][..pad])?;
    Ok(pad as u64)
}

/// The end-of-archive marker: two zero blocks.
pub fn write_end<W: Write>(w: &mut W) -> io::Result<u64> {
    w.write_all(&[0u8; 2 * BLOCK])?;
    Ok(2 * BLOCK as u64)
}

/// Split a path into ustar (prefix, name) when it fits: name <= 100 bytes, or a split at a `/`
/// leaving prefix <= 155 and name <= 100.
fn split_ustar_path(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 100 {
        return Some((b"", path));
    }
    if path.len() > 256 {
        return None;
    }
    // The name part may keep a directory's trailing slash; search separators before it.
    let search_end = path.len() - 1;
    for i in (0..search_end).rev() {
        if path[i] == b'/' && i <= 155 && path.len() - i - 1 <= 100 && i > 0 {
            return Some((&path[..i], &path[i + 1..]));
        }
    }
    None
}

fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    // "<len> <key>=<value>\n" where len counts itself.
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    loop {
        let total = body + len.to_string().len();
        if total == len {
            break;
        }
        len = total;
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

#[allow(clippy::too_many_arguments)]
fn ustar_block(
    name: &[u8],
    prefix: &[u8],
    typeflag: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    link: &[u8],
    dev_major: u32,
    dev_minor: u32,
) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    b[..name.len()].copy_from_slice(name);
    octal(&mut b[100..108], mode as u64);
    octal(&mut b[108..116], uid);
    octal(&mut b[116..124], gid);
    octal(&mut b[124..136], size);
    octal(&mut b[136..148], mtime);
    b[156] = typeflag;
    b[157..157 + link.len()].copy_from_slice(link);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    if matches!(typeflag, b'3' | b'4') {
        numeric8(&mut b[329..337], dev_major as u64);
        numeric8(&mut b[337..345], dev_minor as u64);
    } else {
        octal(&mut b[329..337], 0);
        octal(&mut b[337..345], 0);
    }
    b[345..345 + prefix.len()].copy_from_slice(prefix);
    b[148..156].fill(b' ');
    let sum: u64 = b.iter().map(|&x| x as u64).sum();
    // Six octal digits, NUL, space (the traditional layout).
    let digits = format!("{sum:06o}");
    b[148..154].copy_from_slice(digits.as_bytes());
    b[154] = 0;
    b[155] = b' ';
    b
}

/// Zero-padded octal digits followed by a NUL, filling the field.
fn octal(field: &mut [u8], v: u64) {
    let width = field.len() - 1;
    let s = format!("{v:0width$o}");
    field[..width].copy_from_slice(&s.as_bytes()[s.len() - width..]);
    field[width] = 0;
}

/// Octal when it fits, GNU base-256 otherwise.
fn numeric8(field: &mut [u8], v: u64) {
    if v <= MAX_OCTAL_8 {
        octal(field, v);
    } else {
        field.fill(0);
        field[0] = 0x80;
        field[4..8].copy_from_slice(&(v as u32).to_be_bytes());
    }
}

#[cfg(test)]
pub mod tests_support {
    pub fn header_size(h: &[u8]) -> u64 {
        super::parse_numeric(&h[124..136]).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr<'a>(path: &'a [u8], typeflag: u8, size: u64, link: &'a [u8]) -> Header<'a> {
        Header {
            path,
            typeflag,
            mode: 0o755,
            uid: 1000,
            gid: 1000,
            size,
            mtime: 1_700_000_000,
            link,
            dev_major: 0,
            dev_minor: 0,
            xattrs: &[],
        }
    }

    #[test]
    fn pax_record_length_counts_itself() {
        let mut v = Vec::new();
        pax_record(&mut v, b"path", b"x");
        assert_eq!(v, b"9 path=x\n");
        v.clear();
        pax_record(&mut v, b"path", &[b'a'; 95]);
        assert_eq!(&v[..4], b"105 ");
        assert_eq!(v.len(), 105);
    }

    #[test]
    fn writer_output_reads_back() {
        let long: Vec<u8> = b"d/"
            .iter()
            .copied()
            .chain(std::iter::repeat_n(b'n', 300))
            .collect();
        let longlink = vec![b'l'; 150];
        let cap: &[u8] = b"\x01\x00\x00\x02\n\x00 binary";
        let mut out = Vec::new();
        let mut s = Vec::new();
        write_header(&mut out, &hdr(b"dir/", b'5', 0, b""), &mut s).unwrap();
        let mut h = hdr(&long, b'0', 5, b"");
        let x = [(&b"security.capability"[..], cap)];
        h.xattrs = &x;
        h.uid = 5_000_000;
        write_header(&mut out, &h, &mut s).unwrap();
        out.extend_from_slice(b"hello");
        write_padding(&mut out, 5).unwrap();
        write_header(&mut out, &hdr(b"sym", b'2', 0, &longlink), &mut s).unwrap();
        write_end(&mut out).unwrap();

        // The tar crate agrees with our encoding.
        let mut a = tar::Archive::new(&out[..]);
        let names: Vec<Vec<u8>> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path_bytes().into_owned())
            .collect();
        assert_eq!(names, vec![b"dir/".to_vec(), long.clone(), b"sym".to_vec()]);

        let mut r = TarReader::new(&out[..]);
        let mut e = Entry::default();
        assert!(r.next(&mut e).unwrap());
        assert_eq!(
            (e.kind, &e.path[..], e.mode, e.uid),
            (Kind::Dir, &b"dir/"[..], 0o755, 1000)
        );
        assert!(r.next(&mut e).unwrap());
        assert_eq!(
            (e.kind, &e.path, e.uid, e.size),
            (Kind::File, &long, 5_000_000, 5)
        );
        assert_eq!(
            e.xattrs,
            vec![(b"security.capability".to_vec(), cap.to_vec())]
        );
        assert_eq!(r.data(b"").unwrap(), b"hello");
        r.consume(5);
        assert!(r.next(&mut e).unwrap());
        assert_eq!((e.kind, &e.link), (Kind::Symlink, &longlink));
        assert_eq!(e.mtime, 1_700_000_000);
        assert!(!r.next(&mut e).unwrap());
    }

    #[test]
    fn ustar_prefix_split() {
        let p: Vec<u8> = [vec![b'a'; 120], b"/".to_vec(), vec![b'b'; 90]].concat();
        let (prefix, name) = split_ustar_path(&p).unwrap();
        assert_eq!(prefix.len(), 120);
        assert_eq!(name.len(), 90);
        assert!(split_ustar_path(&[b'a'; 200]).is_none());
    }

    #[test]
    fn garbage_and_truncation() {
        let garbage = vec![0x42u8; 2048];
        let err = TarReader::new(&garbage[..])
            .next(&mut Entry::default())
            .unwrap_err();
        assert!(err.to_string().contains("invalid tar header"), "{err}");

        let mut out = Vec::new();
        write_header(&mut out, &hdr(b"f", b'0', 1000, b""), &mut Vec::new()).unwrap();
        out.extend_from_slice(&[1u8; 100]);
        let mut r = TarReader::new(&out[..]);
        let mut e = Entry::default();
        assert!(r.next(&mut e).unwrap());
        let d = r.data(&e.path).unwrap().len();
        r.consume(d);
        let err = r.data(&e.path).unwrap_err();
        assert!(err.to_string().contains("truncated in 'f'"), "{err}");

        let err = TarReader::new(&out[..300]).next(&mut e).unwrap_err();
        assert!(
            err.to_string().contains("truncated inside a header"),
            "{err}"
        );
        let err = TarReader::new(&b""[..]).next(&mut e).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_time(b"12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_time(b"-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_time(b"7"), Some((7, 0)));
        assert_eq!(parse_time(b"x"), None);
    }

    #[test]
    fn numeric_fields() {
        assert_eq!(parse_numeric(b"0000755\0"), Some(0o755));
        assert_eq!(parse_numeric(b"  755 \0"), Some(0o755));
        assert_eq!(parse_numeric(b"\0\0\0\0\0\0\0\0"), Some(0));
        assert_eq!(parse_numeric(&[0x80, 0, 0, 0, 0, 0, 1, 0]), Some(256));
        assert_eq!(parse_numeric(b"12x"), None);
        assert_eq!(parse_numeric(&[0xff, 0xff, 0, 0, 0, 0, 1, 0]), None);
    }
}

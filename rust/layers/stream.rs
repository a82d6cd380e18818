//! The one-pass input pipeline of `extract_layer`. A producer thread reads the source byte
//! range, tees it to the blob file, hashes it (digest) and decompresses it; it hands 1 MiB
//! chunks to the extracting thread through a bounded channel, so decompression and extraction
//! overlap like `gzip -d | tar -x`. The extracting side hashes the chunks (DiffID), which
//! balances the work between the two threads.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Cursor, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, SyncSender};

use sha2::{Digest, Sha256};

use super::compress::{decoder, Compression};
use super::{Error, IoContext, Result};
use crate::digest::format_digest;

/// Size of the chunks handed from the decompressing thread to the extracting one.
pub const CHUNK: usize = 1 << 20;
/// Chunks in flight between the two threads.
pub const DEPTH: usize = 4;

/// Where a layer comes from: a path, or a file descriptor owned by the caller.
#[derive(Debug, Clone)]
pub enum Source {
    Path(PathBuf),
    Fd(i32),
}

/// Reads `length` bytes (or to EOF) from `offset` of a file with pread, so a caller's fd keeps
/// its position; falls back to plain reads (skipping `offset` bytes) on pipes and sockets.
pub struct SourceReader {
    file: File,
    pos: u64,
    skip: u64,
    left: Option<u64>,
    length: Option<u64>,
    seekable: bool,
}

impl SourceReader {
    pub fn open(src: &Source, offset: u64, length: Option<u64>) -> Result<Self> {
        let file = match src {
            Source::Path(p) => File::open(p).ctx(|| format!("open layer {}", p.display()))?,
            Source::Fd(fd) => {
                File::from(crate::sys::dup_raw_fd(*fd).ctx(|| format!("use layer fd {fd}"))?)
            }
        };
        Ok(SourceReader {
            file,
            pos: offset,
            skip: 0,
            left: length,
            length,
            seekable: true,
        })
    }

    fn read_inner(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.seekable {
            match self.file.read_at(buf, self.pos) {
                Err(e) if e.raw_os_error() == Some(libc::ESPIPE) => {
                    self.seekable = false;
                    self.skip = self.pos;
                }
                r => return r,
            }
        }
        while self.skip > 0 {
            let n = buf.len().min(self.skip.min(usize::MAX as u64) as usize);
            let got = self.file.read(&mut buf[..n])?;
            if got == 0 {
                return Ok(0);
            }
            self.skip -= got as u64;
        }
        self.file.read(buf)
    }
}

impl Read for SourceReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = match self.left {
            Some(0) => return Ok(0),
            Some(l) => buf.len().min(l.min(usize::MAX as u64) as usize),
            None => buf.len(),
        };
        let n = self.read_inner(&mut buf[..want])?;
        if n == 0 && want > 0 {
            if let (Some(l), Some(len)) = (self.left, self.length) {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("layer is truncated: {} of {} bytes available", len - l, len),
                ));
            }
        }
        self.pos += n as u64;
        if let Some(l) = self.left.as_mut() {
            *l -= n as u64;
        }
        Ok(n)
    }
}

/// Hashes and counts the raw bytes and copies them to the blob file. Failures of the source or
/// the blob file are remembered so they are not mistaken for a corrupt stream.
pub struct RawTee {
    src: SourceReader,
    blob: Option<(File, PathBuf)>,
    hash: Sha256,
    count: u64,
    failure: Option<Error>,
}

impl RawTee {
    pub fn new(src: SourceReader, blob: Option<(File, PathBuf)>) -> Self {
        RawTee {
            src,
            blob,
            hash: Sha256::new(),
            count: 0,
            failure: None,
        }
    }

    /// Read up to 4 bytes for magic-number detection (fewer only at EOF).
    pub fn read_magic(&mut self) -> Result<([u8; 4], usize)> {
        let mut magic = [0u8; 4];
        let mut got = 0;
        while got < magic.len() {
            match self.read(&mut magic[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(self
                        .failure
                        .take()
                        .unwrap_or_else(|| Error::io("read layer", e)))
                }
            }
        }
        Ok((magic, got))
    }
}

impl Read for RawTee {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.src.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                let err = if e.kind() == io::ErrorKind::UnexpectedEof {
                    Error::layer(e.to_string())
                } else {
                    Error::io("read layer source", io::Error::new(e.kind(), e.to_string()))
                };
                self.failure = Some(err);
                return Err(e);
            }
        };
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        if let Some((f, path)) = self.blob.as_mut() {
            if let Err(e) = f.write_all(&buf[..n]) {
                let msg = e.to_string();
                self.failure = Some(Error::io(format!("write {}", path.display()), e));
                return Err(io::Error::other(msg));
            }
        }
        Ok(n)
    }
}

/// What the producer computed once the whole source was read.
#[derive(Debug)]
pub struct Produced {
    pub digest: String,
    pub size: u64,
    /// The stream was corrupt; `digest` and `size` still cover the whole source when the
    /// producer was asked to drain it after such an error.
    pub corrupt: Option<Error>,
}

/// The producer stopped because the consumer hung up (it failed and reports its own error).
pub const CANCELLED: &str = "layer extraction cancelled";

/// Producer thread body: read, tee, hash, decompress, hash, and send chunks until the source
/// is exhausted. Everything after the compressed stream's end is read and hashed too. A corrupt
/// compressed stream is reported in `Produced::corrupt`; with `drain_on_corrupt` the rest of
/// the source is still read so the digest can be compared (a bad download is the likelier
/// cause). Source and blob-file failures are returned as errors.
pub fn produce(
    mut raw: RawTee,
    magic: &[u8],
    compression: Compression,
    tx: SyncSender<Vec<u8>>,
    free: Receiver<Vec<u8>>,
    drain_on_corrupt: bool,
) -> Result<Produced> {
    let outcome: io::Result<bool> = (|| {
        let input = BufReader::with_capacity(CHUNK, Cursor::new(magic).chain(&mut raw));
        let mut dec = decoder(compression, input)?;
        loop {
            let mut chunk = free.try_recv().unwrap_or_default();
            chunk.resize(CHUNK, 0);
            let mut n = 0;
            let mut eof = false;
            while n < CHUNK {
                match dec.read(&mut chunk[n..]) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            chunk.truncate(n);
            if n > 0 && tx.send(chunk).is_err() {
                return Ok(false);
            }
            if eof {
                return Ok(true);
            }
        }
    })();
    let mut corrupt = None;
    match outcome {
        Ok(true) => {}
        Ok(false) => return Err(Error::layer(CANCELLED)),
        Err(e) => {
            if let Some(f) = raw.failure.take() {
                return Err(f);
            }
            let what = if e.kind() == io::ErrorKind::UnexpectedEof {
                "truncated"
            } else {
                "invalid"
            };
            let detail = if what == "invalid" {
                format!(" ({e})")
            } else {
                String::new()
            };
            corrupt = Some(Error::layer(format!(
                "layer is corrupt: {} stream {what} after {} bytes{detail}",
                compression.name(),
                raw.count
            )));
            if !drain_on_corrupt {
                return Err(corrupt.take().expect("set above"));
            }
        }
    }
    // The decompressor saw its end; hash whatever follows so the digest covers every byte.
    if let Err(e) = io::copy(&mut raw, &mut io::sink()) {
        return Err(raw
            .failure
            .take()
            .unwrap_or_else(|| Error::io("read layer", e)));
    }
    if let Some((f, path)) = raw.blob.take() {
        f.sync_all().ctx(|| format!("fsync {}", path.display()))?;
    }
    Ok(Produced {
        digest: format_digest(raw.hash),
        size: raw.count,
        corrupt,
    })
}

/// The consumer end: a `BufRead` over the chunks that counts and (optionally) hashes every
/// chunk as it arrives, returning each used chunk for reuse.
pub struct ChunkReader {
    rx: Receiver<Vec<u8>>,
    free: Sender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    hash: Option<Sha256>,
    count: u64,
}

impl ChunkReader {
    /// `hash`: compute the sha256 of the stream (not needed when it equals the raw digest).
    pub fn new(rx: Receiver<Vec<u8>>, free: Sender<Vec<u8>>, hash: bool) -> Self {
        ChunkReader {
            rx,
            free,
            cur: Vec::new(),
            pos: 0,
            hash: hash.then(Sha256::new),
            count: 0,
        }
    }

    fn take(&mut self, chunk: &[u8]) {
        self.count += chunk.len() as u64;
        if let Some(h) = self.hash.as_mut() {
            h.update(chunk);
        }
    }

    /// Read (and hash) everything the producer still sends.
    pub fn drain(&mut self) {
        self.pos = self.cur.len();
        while let Ok(v) = self.rx.recv() {
            self.take(&v);
            let _ = self.free.send(v);
        }
    }

    /// The stream's digest (when hashed) and length.
    pub fn finish(self) -> (Option<String>, u64) {
        (self.hash.map(format_digest), self.count)
    }
}

impl BufRead for ChunkReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos >= self.cur.len() {
            match self.rx.recv() {
                Ok(next) => {
                    self.take(&next);
                    let old = std::mem::replace(&mut self.cur, next);
                    if old.capacity() > 0 {
                        let _ = self.free.send(old);
                    }
                    self.pos = 0;
                }
                Err(_) => return Ok(&[]),
            }
        }
        Ok(&self.cur[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.cur.len());
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// A writer that hashes and counts what passes through it.
pub struct HashWriter<W> {
    pub inner: W,
    pub hash: Sha256,
    pub count: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hash: Sha256::new(),
            count: 0,
        }
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_range_and_short_length() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        let mut s = SourceReader::open(&Source::Path(p.clone()), 2, Some(5)).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"23456");
        let mut s = SourceReader::open(&Source::Path(p), 8, Some(5)).unwrap();
        let err = s.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn source_from_pipe_skips_offset() {
        let (r, w) = rustix::pipe::pipe().unwrap();
        rustix::io::write(&w, b"0123456789").unwrap();
        drop(w);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&r);
        let mut s = SourceReader::open(&Source::Fd(fd), 3, Some(4)).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"3456");
    }
}

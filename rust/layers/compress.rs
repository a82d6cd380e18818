//! Layer compression: detection by magic number, streaming decoders (multi-member gzip, zstd)
//! and reproducible encoders (gzip with a fixed header, zstd optionally multithreaded).

use std::io::{self, BufRead, Read, Write};

/// The compression of a layer blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

/// Default gzip level: containerd compresses layers at level 1 (speed over a few percent).
pub const DEFAULT_GZIP_LEVEL: u32 = 1;
/// Default zstd level (the zstd CLI's default).
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

impl Compression {
    /// Detect from the first bytes of a stream: gzip `1f 8b`, zstd `28 b5 2f fd`.
    pub fn detect(header: &[u8]) -> Compression {
        if header.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if header.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "none",
        }
    }

    pub fn from_name(name: &str) -> Option<Compression> {
        match name {
            "gzip" => Some(Compression::Gzip),
            "zstd" => Some(Compression::Zstd),
            "none" => Some(Compression::None),
            _ => None,
        }
    }
}

/// A streaming decoder over a buffered reader. Gzip accepts concatenated members (as pigz and
/// some registries produce); zstd accepts concatenated frames. A stream that ends early yields an
/// `UnexpectedEof` error.
pub fn decoder<'a, R: BufRead + 'a>(c: Compression, r: R) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match c {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(r)?;
            // Layers may use long-distance matching with windows up to 2 GiB (zstd --long=31).
            d.window_log_max(31)?;
            Box::new(d)
        }
        Compression::None => Box::new(r),
    })
}

/// A streaming encoder writing into `W`; `finish` flushes the trailer and returns `W`.
pub enum Encoder<W: Write> {
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    None(W),
}

impl<W: Write> Encoder<W> {
    /// `level`: gzip 0-9 (default 1), zstd 1-22 (default 3; negative levels allowed).
    /// zstd uses `threads` worker threads when more than one; its output does not depend on the
    /// worker count once workers are enabled, so the result stays reproducible across machines.
    pub fn new(c: Compression, level: Option<i32>, threads: u32, w: W) -> io::Result<Self> {
        Ok(match c {
            Compression::Gzip => {
                let level = level
                    .map(|l| l.clamp(0, 9) as u32)
                    .unwrap_or(DEFAULT_GZIP_LEVEL);
                // Reproducible header: mtime 0, no file name, OS byte 255 ("unknown").
                let enc = flate2::GzBuilder::new()
                    .mtime(0)
                    .operating_system(255)
                    .write(w, flate2::Compression::new(level));
                Encoder::Gzip(enc)
            }
            Compression::Zstd => {
                let level = level.unwrap_or(DEFAULT_ZSTD_LEVEL);
                let mut enc = zstd::stream::write::Encoder::new(w, level)?;
                // Always run in multithreaded mode (at least one worker) so the frame layout is
                // the same whatever the machine's CPU count.
                enc.multithread(threads.max(1))?;
                enc.include_checksum(true)?;
                Encoder::Zstd(enc)
            }
            Compression::None => Encoder::None(w),
        })
    }

    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
            Encoder::None(w) => Ok(w),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
            Encoder::None(w) => w.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.write_all(buf),
            Encoder::Zstd(e) => e.write_all(buf),
            Encoder::None(w) => w.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
            Encoder::None(w) => w.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(c: Compression, data: &[u8], threads: u32) -> Vec<u8> {
        let mut e = Encoder::new(c, None, threads, Vec::new()).unwrap();
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn decompress(c: Compression, data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        decoder(c, data)?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn detect_magic() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"ustar"), Compression::None);
        assert_eq!(Compression::detect(&[0x1f]), Compression::None);
        assert_eq!(Compression::detect(&[]), Compression::None);
    }

    #[test]
    fn roundtrip_and_truncation() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in [Compression::Gzip, Compression::Zstd] {
            let z = compress(c, &data, 1);
            assert_eq!(Compression::detect(&z), c);
            assert_eq!(decompress(c, &z).unwrap(), data);
            let err = decompress(c, &z[..z.len() / 2]).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{c:?}: {err}");
            let err = decompress(c, &z[..z.len() - 3]).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{c:?}: {err}");
        }
    }

    #[test]
    fn multi_member_gzip() {
        let mut z = compress(Compression::Gzip, b"hello ", 1);
        z.extend(compress(Compression::Gzip, b"world", 1));
        assert_eq!(decompress(Compression::Gzip, &z).unwrap(), b"hello world");
    }

    #[test]
    fn zstd_output_independent_of_worker_count() {
        // Several zstd jobs' worth (jobs are a few MiB at level 3), half-compressible.
        let data: Vec<u8> = (0..24_000_000u32)
            .map(|i| {
                if i % 2 == 0 {
                    (i.wrapping_mul(2654435761) >> 13) as u8
                } else {
                    (i >> 10) as u8
                }
            })
            .collect();
        assert_eq!(
            compress(Compression::Zstd, &data, 1),
            compress(Compression::Zstd, &data, 3)
        );
    }
}

"""Type stubs for pyrun's Rust extension (rust/lib.rs). Every function releases the GIL."""

from typing import Literal, TypedDict

__version__: str

class LayerError(Exception):
    """A layer could not be read or extracted: corrupt or truncated stream, an entry that would
    escape the target directory, a digest mismatch. The message names the entry and the cause."""

class ExtractResult(TypedDict):
    digest: str  # "sha256:<hex>" of the bytes read (the compressed blob)
    diff_id: str  # "sha256:<hex>" of the uncompressed tar stream
    size: int  # bytes read (compressed size)
    uncompressed_size: int
    compression: Literal["gzip", "zstd", "none"]
    entries: int  # entries created (whiteouts, opaque markers and skipped entries not counted)
    warnings: list[str]  # e.g. device nodes skipped for lack of CAP_MKNOD

class LayerResult(TypedDict):
    digest: str
    diff_id: str
    size: int
    uncompressed_size: int
    entries: int

def detect_compression(header: bytes) -> Literal["gzip", "zstd", "none"]:
    """Compression of a stream from its first bytes (magic numbers)."""

def extract_layer(
    src: str | int,
    dest: str,
    *,
    offset: int = 0,
    length: int | None = None,
    blob_out: str | None = None,
    expect_digest: str | None = None,
    expect_diff_id: str | None = None,
    whiteouts: Literal["overlay", "apply"] = "overlay",
) -> ExtractResult:
    """Read a layer (plain, gzip or zstd tar; detected by magic) from a path or an open fd,
    optionally only `length` bytes from `offset`, in one pass: hash the raw bytes, decompress,
    hash the tar (DiffID), and extract it under `dest` (an existing directory), confined with
    openat2(RESOLVE_IN_ROOT). The raw bytes are also written to `blob_out` when given.
    whiteouts="overlay" turns `.wh.` entries into overlayfs whiteouts (0/0 char devices,
    trusted.overlay.opaque=y); "apply" deletes the named paths instead (flattening).
    Raises LayerError on corrupt input, escapes, or when a digest differs from the expected one."""

def create_layer(
    src_dir: str,
    out: str,
    *,
    compression: Literal["gzip", "zstd", "none"] = "gzip",
    level: int | None = None,
    overlay_upper: bool = False,
    source_date_epoch: int | None = None,
) -> LayerResult:
    """Write a layer tar of `src_dir` to `out`: sorted entries, PAX headers, hardlinks kept,
    security.capability xattrs, mtimes clamped to `source_date_epoch` when given. With
    `overlay_upper`, overlayfs whiteouts and opaque dirs become OCI `.wh.` entries."""

def sha256_file(path: str, offset: int = 0, length: int | None = None) -> str:
    """ "sha256:<hex>" of a file (or a byte range of it)."""

def sha256_files(paths: list[str], threads: int = 0) -> list[str]:
    """sha256 of many files in parallel (threads=0: one per CPU). Order follows `paths`."""

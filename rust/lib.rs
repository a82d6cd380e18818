//! PyO3 bindings for pyrun's native core (`pyrun._core`). Only argument conversion, GIL release
//! and error mapping live here; the work is in `digest` and `layers`.

pub mod digest;
pub mod layers;
pub mod sys;

use std::path::PathBuf;

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use layers::compress::Compression;
use layers::extract::Whiteouts;
use layers::stream::Source;
use layers::Error;

create_exception!(
    pyrun._core,
    LayerError,
    PyException,
    "A layer could not be read or extracted: corrupt or truncated stream, an entry that would escape the target directory, a digest mismatch."
);

fn to_py(e: Error) -> PyErr {
    match e {
        Error::Layer(m) => LayerError::new_err(m),
        Error::Value(m) => PyValueError::new_err(m),
        Error::Io { context, source } => match source.raw_os_error() {
            // OSError(errno, msg) picks the subclass (FileNotFoundError, PermissionError, ...).
            Some(errno) => {
                let strerror = std::io::Error::from_raw_os_error(errno).to_string();
                let strerror = strerror
                    .split(" (os error")
                    .next()
                    .unwrap_or(&strerror)
                    .to_string();
                PyOSError::new_err((errno, format!("{context}: {strerror}")))
            }
            None => PyOSError::new_err(format!("{context}: {source}")),
        },
    }
}

#[derive(FromPyObject)]
enum SrcArg {
    Fd(i32),
    Path(PathBuf),
}

/// Compression of a stream from its first bytes (magic numbers).
#[pyfunction]
fn detect_compression(py: Python<'_>, header: &[u8]) -> &'static str {
    py.detach(|| Compression::detect(header).name())
}

#[pyfunction]
#[pyo3(signature = (src, dest, *, offset=0, length=None, blob_out=None, expect_digest=None, expect_diff_id=None, whiteouts="overlay"))]
#[allow(clippy::too_many_arguments)]
fn extract_layer<'py>(
    py: Python<'py>,
    src: SrcArg,
    dest: PathBuf,
    offset: u64,
    length: Option<u64>,
    blob_out: Option<PathBuf>,
    expect_digest: Option<String>,
    expect_diff_id: Option<String>,
    whiteouts: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let whiteouts = match whiteouts {
        "overlay" => Whiteouts::Overlay,
        "apply" => Whiteouts::Apply,
        other => {
            return Err(PyValueError::new_err(format!(
                "whiteouts must be 'overlay' or 'apply', not {other:?}"
            )))
        }
    };
    let src = match src {
        SrcArg::Fd(fd) => Source::Fd(fd),
        SrcArg::Path(p) => Source::Path(p),
    };
    let opts = layers::extract::Options {
        offset,
        length,
        blob_out,
        expect_digest,
        expect_diff_id,
        whiteouts,
    };
    let s = py
        .detach(|| layers::extract::extract_layer(&src, &dest, &opts))
        .map_err(to_py)?;
    let d = PyDict::new(py);
    d.set_item("digest", s.digest)?;
    d.set_item("diff_id", s.diff_id)?;
    d.set_item("size", s.size)?;
    d.set_item("uncompressed_size", s.uncompressed_size)?;
    d.set_item("compression", s.compression.name())?;
    d.set_item("entries", s.entries)?;
    d.set_item("warnings", s.warnings)?;
    Ok(d)
}

#[pyfunction]
#[pyo3(signature = (src_dir, out, *, compression="gzip", level=None, overlay_upper=false, source_date_epoch=None))]
fn create_layer<'py>(
    py: Python<'py>,
    src_dir: PathBuf,
    out: PathBuf,
    compression: &str,
    level: Option<i32>,
    overlay_upper: bool,
    source_date_epoch: Option<i64>,
) -> PyResult<Bound<'py, PyDict>> {
    let compression = Compression::from_name(compression).ok_or_else(|| {
        PyValueError::new_err(format!(
            "compression must be 'gzip', 'zstd' or 'none', not {compression:?}"
        ))
    })?;
    let opts = layers::create::Options {
        compression,
        level,
        overlay_upper,
        source_date_epoch,
    };
    let s = py
        .detach(|| layers::create::create_layer(&src_dir, &out, &opts))
        .map_err(to_py)?;
    let d = PyDict::new(py);
    d.set_item("digest", s.digest)?;
    d.set_item("diff_id", s.diff_id)?;
    d.set_item("size", s.size)?;
    d.set_item("uncompressed_size", s.uncompressed_size)?;
    d.set_item("entries", s.entries)?;
    Ok(d)
}

/// "sha256:<hex>" of a file (or a byte range of it).
#[pyfunction]
#[pyo3(signature = (path, offset=0, length=None))]
fn sha256_file(
    py: Python<'_>,
    path: PathBuf,
    offset: u64,
    length: Option<u64>,
) -> PyResult<String> {
    py.detach(|| digest::sha256_file(&path, offset, length))
        .map_err(to_py)
}

/// sha256 of many files in parallel (threads=0: one per CPU). Order follows `paths`.
#[pyfunction]
#[pyo3(signature = (paths, threads=0))]
fn sha256_files(py: Python<'_>, paths: Vec<PathBuf>, threads: usize) -> PyResult<Vec<String>> {
    py.detach(|| digest::sha256_files(&paths, threads))
        .map_err(to_py)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("LayerError", m.py().get_type::<LayerError>())?;
    m.add_function(wrap_pyfunction!(detect_compression, m)?)?;
    m.add_function(wrap_pyfunction!(extract_layer, m)?)?;
    m.add_function(wrap_pyfunction!(create_layer, m)?)?;
    m.add_function(wrap_pyfunction!(sha256_file, m)?)?;
    m.add_function(wrap_pyfunction!(sha256_files, m)?)?;
    Ok(())
}

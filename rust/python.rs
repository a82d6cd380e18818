//! PyO3 bindings for pyrun's native core (`pyrun._core`). Only argument conversion, GIL release
//! and error mapping live here; the work is in `digest`, `layers` and `runtime`.

use std::path::PathBuf;

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::layers::compress::Compression;
use crate::layers::extract::Whiteouts;
use crate::layers::stream::Source;
use crate::layers::Error;
use crate::{digest, layers, runtime};

create_exception!(
    pyrun._core,
    LayerError,
    PyException,
    "A layer could not be read or extracted: corrupt or truncated stream, an entry that would escape the target directory, a digest mismatch."
);

create_exception!(
    pyrun._core,
    StartError,
    PyException,
    "The container could not be started. args = (message, exit_code): 127 when the command is not found, 126 when it cannot be executed, 125 for any other setup failure."
);

fn runtime_to_py(e: runtime::Error) -> PyErr {
    match e {
        runtime::Error::Start { msg, code } => StartError::new_err((msg, code)),
        runtime::Error::Value(m) => PyValueError::new_err(m),
        runtime::Error::Os { errno, msg } => PyOSError::new_err((errno, msg)),
    }
}

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

/// Mount overlayfs at `target` (lowers topmost first); returns the method used.
#[pyfunction]
#[pyo3(signature = (lowers, target, *, upper=None, work=None, method="auto", links_dir=None, volatile=false))]
#[allow(clippy::too_many_arguments)] // the Python signature, keywords
fn mount_overlay(
    py: Python<'_>,
    lowers: Vec<PathBuf>,
    target: PathBuf,
    upper: Option<PathBuf>,
    work: Option<PathBuf>,
    method: &str,
    links_dir: Option<PathBuf>,
    volatile: bool,
) -> PyResult<&'static str> {
    let method = runtime::overlay::Method::from_name(method).ok_or_else(|| {
        PyValueError::new_err(format!(
            "method must be 'auto', 'new' or 'legacy', not {method:?}"
        ))
    })?;
    py.detach(|| {
        runtime::overlay::mount_overlay_opts(
            &lowers,
            &target,
            upper.as_deref(),
            work.as_deref(),
            method,
            links_dir.as_deref(),
            volatile,
        )
    })
    .map_err(runtime_to_py)
}

/// umount2(target, MNT_DETACH if detach else 0); not mounted is not an error.
#[pyfunction]
#[pyo3(signature = (target, *, detach=false))]
fn unmount(py: Python<'_>, target: PathBuf, detach: bool) -> PyResult<()> {
    py.detach(|| runtime::overlay::unmount(&target, detach))
        .map_err(runtime_to_py)
}

/// Make `dir` a tmpfs unless it is on one already (runtime::overlay::ensure_tmpfs); returns
/// whether this call mounted one.
#[pyfunction]
fn ensure_tmpfs(py: Python<'_>, dir: PathBuf) -> PyResult<bool> {
    py.detach(|| runtime::overlay::ensure_tmpfs(&dir))
        .map_err(runtime_to_py)
}

/// Remove a file or a whole directory tree, never following symlinks (std's remove_dir_all
/// walks by directory fds); missing is not an error. Releases the GIL.
#[pyfunction]
fn remove_tree(py: Python<'_>, path: PathBuf) -> PyResult<()> {
    let gone = |r: std::io::Result<()>| match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    };
    py.detach(|| match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_dir() => gone(std::fs::remove_dir_all(&path)),
        Ok(_) => gone(std::fs::remove_file(&path)),
        Err(e) => gone(Err(e)),
    })
    .map_err(|e| match e.raw_os_error() {
        Some(errno) => PyOSError::new_err((
            errno,
            crate::cgroups::errno_text(&e),
            path.display().to_string(),
        )),
        None => PyOSError::new_err(format!("{}: {e}", path.display())),
    })
}

/// Wait until the deletions replay_run left to threads have finished. Releases the GIL.
#[pyfunction]
fn wait_removals(py: Python<'_>) {
    py.detach(crate::fastrun::wait_removals)
}

/// Replay a run template (JSON text; rust/fastrun.rs) in the store at `root`, the container's
/// stdout and stderr on `stdio`: None when the template is no longer valid (nothing done), else
/// (container.json as written, exit code). A --rm container's directory is deleted by a thread
/// of its own afterwards (wait_removals). A start failure raises StartError(message, code).
#[pyfunction]
#[pyo3(signature = (root, template, *, stdio=None))]
fn replay_run(
    py: Python<'_>,
    root: PathBuf,
    template: &[u8],
    stdio: Option<(i32, i32)>,
) -> PyResult<Option<(String, i32)>> {
    let template = template.to_vec();
    match py.detach(|| crate::fastrun::replay_text(&root, &template, stdio, true)) {
        None => Ok(None),
        Some(Ok(r)) => Ok(Some((r.record, r.exit_code))),
        Some(Err((msg, code))) => Err(StartError::new_err((msg, code))),
    }
}

/// Run the container of bundle/config.json in the foreground; returns its exit status, or
/// with details=True {"exit_code", "oom_killed", "cgroup"}.
#[pyfunction]
#[pyo3(signature = (bundle, *, pid_file=None, stdio=None, details=false, interactive=false, log=None))]
fn run_container(
    py: Python<'_>,
    bundle: PathBuf,
    pid_file: Option<PathBuf>,
    stdio: Option<(i32, i32)>,
    details: bool,
    interactive: bool,
    log: Option<PathBuf>,
) -> PyResult<Py<PyAny>> {
    let out = py
        .detach(|| {
            runtime::run_container(
                &bundle,
                pid_file.as_deref(),
                stdio,
                interactive,
                log.as_deref(),
            )
        })
        .map_err(runtime_to_py)?;
    if !details {
        return Ok(out.exit_code.into_pyobject(py)?.into_any().unbind());
    }
    let d = PyDict::new(py);
    d.set_item("exit_code", out.exit_code)?;
    d.set_item("oom_killed", out.oom_killed)?;
    d.set_item("cgroup", out.cgroup)?;
    Ok(d.into_any().unbind())
}

/// Run `config` (a runtime-spec config whose namespaces are all joined by path) as a new
/// process of the running container whose init is `target_pid`, in the foreground; returns
/// its exit status.
#[pyfunction]
#[pyo3(signature = (config, target_pid, *, stdio=None, interactive=false))]
fn exec_container(
    py: Python<'_>,
    config: PathBuf,
    target_pid: i32,
    stdio: Option<(i32, i32)>,
    interactive: bool,
) -> PyResult<i32> {
    let out = py
        .detach(|| runtime::exec_container(&config, target_pid, stdio, interactive))
        .map_err(runtime_to_py)?;
    Ok(out.exit_code)
}

/// Freeze or thaw the cgroup `path` (v1 freezer.state, v2 cgroup.freeze): `pause`.
#[pyfunction]
fn freeze_cgroup(py: Python<'_>, path: String, frozen: bool) -> PyResult<()> {
    py.detach(|| {
        let m = crate::cgroups::existing(std::path::Path::new(crate::cgroups::ROOT), &path)?;
        m.freeze(frozen)
    })
    .map_err(PyOSError::new_err)
}

/// Whether the cgroup `path` is frozen (false when it does not exist).
#[pyfunction]
fn cgroup_frozen(py: Python<'_>, path: String) -> bool {
    py.detach(|| {
        crate::cgroups::existing(std::path::Path::new(crate::cgroups::ROOT), &path)
            .map(|m| m.frozen())
            .unwrap_or(false)
    })
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("LayerError", m.py().get_type::<LayerError>())?;
    m.add("StartError", m.py().get_type::<StartError>())?;
    m.add_function(wrap_pyfunction!(detect_compression, m)?)?;
    m.add_function(wrap_pyfunction!(ensure_tmpfs, m)?)?;
    m.add_function(wrap_pyfunction!(wait_removals, m)?)?;
    m.add_function(wrap_pyfunction!(extract_layer, m)?)?;
    m.add_function(wrap_pyfunction!(create_layer, m)?)?;
    m.add_function(wrap_pyfunction!(sha256_file, m)?)?;
    m.add_function(wrap_pyfunction!(sha256_files, m)?)?;
    m.add_function(wrap_pyfunction!(mount_overlay, m)?)?;
    m.add_function(wrap_pyfunction!(unmount, m)?)?;
    m.add_function(wrap_pyfunction!(remove_tree, m)?)?;
    m.add_function(wrap_pyfunction!(replay_run, m)?)?;
    m.add_function(wrap_pyfunction!(run_container, m)?)?;
    m.add_function(wrap_pyfunction!(exec_container, m)?)?;
    m.add_function(wrap_pyfunction!(freeze_cgroup, m)?)?;
    m.add_function(wrap_pyfunction!(cgroup_frozen, m)?)?;
    crate::python_net::register(m)?;
    Ok(())
}

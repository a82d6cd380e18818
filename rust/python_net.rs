//! PyO3 bindings for `net` (host networking): argument conversion, GIL release, OSError.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;

use crate::net;

fn os_err(e: std::io::Error) -> PyErr {
    match e.raw_os_error() {
        Some(errno) => PyOSError::new_err((errno, e.to_string())),
        None if e.kind() == std::io::ErrorKind::InvalidInput => {
            PyValueError::new_err(e.to_string())
        }
        None => PyOSError::new_err(e.to_string()),
    }
}

/// Create bridge `name` with gateway address `cidr` (A.B.C.D/N) and bring it up; existing
/// parts are kept.
#[pyfunction]
#[pyo3(signature = (name, cidr, *, mtu=None))]
fn net_ensure_bridge(py: Python<'_>, name: String, cidr: String, mtu: Option<u32>) -> PyResult<()> {
    py.detach(|| net::ensure_bridge(&name, &cidr, mtu))
        .map_err(os_err)
}

/// Delete a link (bridge or veth pair) by name; absent is fine.
#[pyfunction]
fn net_delete_link(py: Python<'_>, name: String) -> PyResult<()> {
    py.detach(|| net::delete_link(&name)).map_err(os_err)
}

/// Create a network namespace (loopback up) bind-mounted at `path`.
#[pyfunction]
fn net_create_netns(py: Python<'_>, path: PathBuf) -> PyResult<()> {
    py.detach(|| net::create_netns(&path)).map_err(os_err)
}

/// Unmount and remove a namespace file made by net_create_netns; absent is fine.
#[pyfunction]
fn net_delete_netns(py: Python<'_>, path: PathBuf) -> PyResult<()> {
    py.detach(|| net::delete_netns(&path)).map_err(os_err)
}

/// A veth pair between the namespace at `netns` (`inner`, addressed `cidr`, default route via
/// `gateway`) and the host (`host`, enslaved to `bridge`, up).
#[pyfunction]
#[pyo3(signature = (netns, inner, host, bridge, cidr, *, gateway=None, mac=None, mtu=None))]
#[allow(clippy::too_many_arguments)]
fn net_attach_veth(
    py: Python<'_>,
    netns: PathBuf,
    inner: String,
    host: String,
    bridge: String,
    cidr: String,
    gateway: Option<String>,
    mac: Option<Vec<u8>>,
    mtu: Option<u32>,
) -> PyResult<()> {
    let gateway = gateway
        .map(|g| g.parse::<Ipv4Addr>())
        .transpose()
        .map_err(|_| PyValueError::new_err("gateway: not an IPv4 address"))?;
    let mac: Option<[u8; 6]> = mac
        .map(|m| m.try_into())
        .transpose()
        .map_err(|_| PyValueError::new_err("mac: 6 bytes expected"))?;
    py.detach(|| {
        net::attach_veth(&net::Veth {
            netns: &netns,
            inner: &inner,
            host: &host,
            bridge: &bridge,
            cidr: &cidr,
            gateway,
            mac,
            mtu,
        })
    })
    .map_err(os_err)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(net_ensure_bridge, m)?)?;
    m.add_function(wrap_pyfunction!(net_delete_link, m)?)?;
    m.add_function(wrap_pyfunction!(net_create_netns, m)?)?;
    m.add_function(wrap_pyfunction!(net_delete_netns, m)?)?;
    m.add_function(wrap_pyfunction!(net_attach_veth, m)?)?;
    Ok(())
}

//! pyrun's native core: layer extraction and creation, content hashing, the container runtime
//! and the per-container monitor. The Python extension (`pyrun._core`, feature `python`), the
//! `pyrun-runtime` executable and the `pyrun` executable (the command users type: a
//! [`fastrun`] replay, else the Python CLI) are thin front ends over the same modules.

pub mod cgroups;
pub mod digest;
pub mod fastrun;
pub mod layers;
pub mod logfile;
pub mod monitor;
pub mod net;
pub mod runc;
pub mod runtime;
pub mod sys;
pub mod timefmt;

#[cfg(feature = "python")]
mod python;
#[cfg(feature = "python")]
mod python_net;

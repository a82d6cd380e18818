//! `pyrun-runtime`: pyrun's native executable. `pyrun-runtime monitor` runs the per-container
//! monitor of detached containers; every other command is runc's command line (see
//! [`_core::runc`]), so containerd, Docker and Kubernetes can use pyrun as their low-level
//! runtime. Both share the runtime with the Python extension, one code path.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let code = match args.first().and_then(|a| a.to_str()) {
        Some("monitor") => _core::monitor::cli(&args[1..]),
        _ => _core::runc::main(&args),
    };
    std::process::exit(code);
}

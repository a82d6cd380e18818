//! `pyrun-runtime`: pyrun's native executable. Today it runs the per-container monitor of
//! detached containers (`pyrun-runtime monitor`); it shares the runtime with the Python
//! extension, one code path.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let code = match args.first().and_then(|a| a.to_str()) {
        Some("monitor") => _core::monitor::cli(&args[1..]),
        Some("--version") | Some("-v") | Some("version") => {
            println!("pyrun-runtime version {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Some(other) => {
            eprintln!("pyrun-runtime: unknown command {other:?} (known: monitor, --version)");
            2
        }
        None => {
            eprintln!("usage: pyrun-runtime monitor --config FILE [--report-fd N]");
            2
        }
    };
    std::process::exit(code);
}

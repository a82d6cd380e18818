//! `pyrun`: the command users type. A foreground `run` line that the Python CLI has run before
//! (same line, directory, environment and user) and whose inputs are unchanged is replayed
//! natively ([`_core::fastrun`]); every other line goes to the Python CLI, `pyrun-py`, which
//! is installed beside this executable.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

/// Where `pyrun-py` is: beside this executable (its real path, then the path it was started
/// by), else on $PATH.
fn python_cli(argv0: Option<&OsString>) -> PathBuf {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        dirs.extend(exe.parent().map(PathBuf::from));
    }
    if let Some(a0) = argv0.map(PathBuf::from) {
        if a0.components().count() > 1 {
            dirs.extend(a0.parent().map(PathBuf::from));
        }
    }
    for d in dirs {
        let p = d.join("pyrun-py");
        if p.is_file() {
            return p;
        }
    }
    PathBuf::from("pyrun-py")
}

fn main() {
    let mut all = std::env::args_os();
    let argv0 = all.next();
    let args: Vec<OsString> = all.collect();
    let key = match _core::fastrun::try_run(&args) {
        _core::fastrun::Outcome::Replayed(code) => std::process::exit(code),
        _core::fastrun::Outcome::Declined(key) => key.unwrap_or_default(),
    };
    let cli = python_cli(argv0.as_ref());
    // The Python CLI writes a run template only for lines this executable handed over, under
    // the key computed here (it removes the variable before anything else reads its
    // environment).
    let err = std::process::Command::new(&cli)
        .arg0("pyrun")
        .args(&args)
        .env(_core::fastrun::LAUNCHER_ENV, key)
        .exec();
    eprintln!(
        "pyrun: cannot start the Python CLI {}: {err}",
        cli.display()
    );
    std::process::exit(125);
}

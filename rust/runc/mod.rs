//! runc's command line over pyrun's runtime, so that containerd (under Docker and
//! Kubernetes) can drive pyrun as its low-level runtime: `pyrun-runtime [global flags]
//! create|start|state|kill|delete|run|exec|ps|pause|resume|update|events|list|spec|features`.
//!
//! The contract is runc's (containerd's go-runc is the caller that matters): flags and
//! positional arguments as runc takes them, runtime-spec state JSON, errors as one line on
//! stderr and, with `--log FILE --log-format json`, as `{"level":"error","msg":...}` lines in
//! that file (which containerd reads back), exit status 1 on failure.
//!
//! Containers are started by the same code as `pyrun run` ([`crate::runtime::start_plan`]);
//! `create` leaves the container process waiting on `<root>/<id>/exec.fifo` with everything
//! set up, and `start` writes the byte it waits for.

mod args;
mod hooks;
mod lifecycle;
mod other;
pub(crate) mod state;

use std::io::Write;
use std::path::PathBuf;

pub use args::Parsed;

/// A failed command: the message and the exit status.
#[derive(Debug)]
pub struct Fail {
    pub msg: String,
    pub code: i32,
}

impl Fail {
    pub fn msg(msg: impl Into<String>) -> Fail {
        Fail {
            msg: msg.into(),
            code: 1,
        }
    }
}

impl From<crate::runtime::Error> for Fail {
    fn from(e: crate::runtime::Error) -> Fail {
        match e {
            crate::runtime::Error::Start { msg, .. } => Fail::msg(msg),
            other => Fail::msg(other.to_string()),
        }
    }
}

pub type Res<T> = Result<T, Fail>;

/// The global flags.
pub struct Global {
    pub root: PathBuf,
    pub log: Option<PathBuf>,
    pub log_json: bool,
    pub debug: bool,
    pub systemd_cgroup: bool,
}

impl Global {
    /// Append one line to `--log` (json or runc's text format); nothing without `--log`.
    pub fn log(&self, level: &str, msg: &str) {
        let Some(path) = &self.log else {
            return;
        };
        let line = self.format(level, msg);
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }

    fn format(&self, level: &str, msg: &str) -> String {
        let time = crate::timefmt::now();
        if self.log_json {
            let mut s = serde_json::json!({"level": level, "msg": msg, "time": time}).to_string();
            s.push('\n');
            s
        } else {
            format!(
                "time={:?} level={level} msg={}\n",
                time,
                serde_json::Value::from(msg)
            )
        }
    }

    pub fn debug(&self, msg: &str) {
        if self.debug {
            self.log("debug", msg);
            if self.log.is_none() {
                eprint!("{}", self.format("debug", msg));
            }
        }
    }

    /// A warning (a failed poststart/poststop hook): logged and on stderr, not a failure.
    pub fn warn(&self, msg: &str) {
        self.log("warning", msg);
        eprintln!("pyrun-runtime: warning: {msg}");
    }
}

const USAGE: &str = "usage: pyrun-runtime [--root DIR] [--log FILE] [--log-format text|json] [--debug] [--systemd-cgroup] COMMAND [ARGS]
commands: create start state kill delete run exec ps pause resume update events list spec features monitor";

/// The entry point: `args` without argv[0]; returns the exit status.
pub fn main(args: &[std::ffi::OsString]) -> i32 {
    // Not dumpable from the first instruction on, so every process cloned from this one is
    // too: a container process can neither ptrace it nor open its /proc/PID/exe (the host's
    // pyrun-runtime binary) or fds while it joins the container (CVE-2019-5736,
    // CVE-2016-9962). The container's own program is exec'd directly, never this binary.
    let _ = crate::runtime::sys::set_dumpable(false);
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut g = Global {
        root: PathBuf::from(default_root()),
        log: None,
        log_json: false,
        debug: false,
        systemd_cgroup: false,
    };
    let mut i = 0;
    let mut command = None;
    while i < args.len() {
        let a = &args[i];
        if !a.starts_with('-') {
            command = Some(a.clone());
            i += 1;
            break;
        }
        let (name, inline) = args::split_flag(a);
        let mut value = || -> Result<String, String> {
            if let Some(v) = &inline {
                return Ok(v.clone());
            }
            i += 1;
            args.get(i)
                .cloned()
                .ok_or_else(|| format!("flag needs an argument: --{name}"))
        };
        let r = match name.as_str() {
            "root" => value().map(|v| g.root = PathBuf::from(v)),
            "log" => value()
                .map(|v| g.log = Some(PathBuf::from(v)).filter(|p| !p.as_os_str().is_empty())),
            "log-format" => value().and_then(|v| match v.as_str() {
                "json" => {
                    g.log_json = true;
                    Ok(())
                }
                "text" => Ok(()),
                other => Err(format!("invalid log-format: {other}")),
            }),
            // Accepted as runc does: `--rootless auto|true|false` (pyrun decides from its
            // euid), `--criu PATH` (checkpoint/restore is not offered).
            "rootless" | "criu" => value().map(drop),
            "debug" => {
                g.debug = true;
                Ok(())
            }
            "systemd-cgroup" => {
                g.systemd_cgroup = true;
                Ok(())
            }
            "version" | "v" => {
                print_version();
                return 0;
            }
            "help" | "h" => {
                println!("{USAGE}");
                return 0;
            }
            other => Err(format!("flag provided but not defined: -{other}")),
        };
        if let Err(msg) = r {
            return report(&g, &Fail::msg(msg));
        }
        i += 1;
    }
    let Some(command) = command else {
        eprintln!("{USAGE}");
        return 1;
    };
    let rest = &args[i..];
    g.debug(&format!("command {command} {rest:?}"));
    let r = match command.as_str() {
        "create" => lifecycle::create(&g, rest),
        "start" => lifecycle::start(&g, rest),
        "run" => lifecycle::run(&g, rest),
        "exec" => lifecycle::exec(&g, rest),
        "delete" => lifecycle::delete(&g, rest),
        "kill" => lifecycle::kill(&g, rest),
        "state" => other::state(&g, rest),
        "list" | "ls" => other::list(&g, rest),
        "ps" => other::ps(&g, rest),
        "pause" => other::pause(&g, rest, true),
        "resume" => other::pause(&g, rest, false),
        "update" => other::update(&g, rest),
        "events" => other::events(&g, rest),
        "spec" => other::spec(&g, rest),
        "features" => other::features(&g, rest),
        "version" => {
            print_version();
            Ok(0)
        }
        "checkpoint" | "restore" => Err(Fail::msg(format!(
            "{command} is not supported by pyrun-runtime (no CRIU integration)"
        ))),
        other => Err(Fail::msg(format!(
            "No help topic for '{other}' (commands: create start state kill delete run exec ps pause resume update events list spec features)"
        ))),
    };
    match r {
        Ok(code) => code,
        Err(f) => report(&g, &f),
    }
}

/// Report a failure as runc does: to `--log` (json or text) and one line on stderr.
fn report(g: &Global, f: &Fail) -> i32 {
    g.log("error", &f.msg);
    if g.log.is_some() {
        eprintln!("{}", f.msg);
    } else {
        eprint!("{}", g.format("error", &f.msg));
    }
    f.code
}

fn default_root() -> String {
    if rustix::process::geteuid().is_root() {
        return "/run/pyrun-runtime".to_string();
    }
    match std::env::var("XDG_RUNTIME_DIR") {
        Ok(d) if !d.is_empty() => format!("{d}/pyrun-runtime"),
        _ => "/run/pyrun-runtime".to_string(),
    }
}

fn print_version() {
    println!("pyrun-runtime version {}", env!("CARGO_PKG_VERSION"));
    println!("spec: {}", other::OCI_VERSION);
}

//! `pyrun run` and a cached `pyrun build` without Python: the replay of templates. (Run
//! templates below; build templates at [`BuildTemplate`].)
//!
//! A Python CLI start costs more than running a container does (the interpreter with json and
//! pathlib alone takes about as long as all of `runc run`). So when the Python CLI has run a
//! foreground `pyrun run` line, it writes what it decided into a template
//! (`<root>/cache/run/<key>.json`, python/pyrun/runtime/template.py): the files of the
//! container's directory (container.json) and of its runtime directory on a tmpfs (the bundle's
//! config.json, the /etc files) with the container's id, name and creation time as
//! placeholders, the overlay's layers (the init layer first), and the files the
//! decision read (the store's tag index, the host's /etc files, pyrun's own sources) with their
//! stat identity. The key is a hash of everything else the decision could depend on: the
//! command line, the working directory, the whole environment and the user.
//!
//! The `pyrun` executable ([`crate::fastrun::try_run`], before it hands the line to the Python
//! CLI) looks the key up; when a template is there and every file it lists is unchanged, it
//! does what the Python CLI would do with the same records: a new id and name, the container's
//! directories, the overlay, `state.json`, the run (the same runtime, in this process), the exit
//! state, the unmount and, for `--rm`, the removal. Decisions (flags, image, spec) are never
//! made here: a line without a valid template goes to Python, which makes them and writes
//! the template for the next time.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::monitor::StateFile;
use crate::runtime;
use crate::runtime::overlay::{self, Method};

/// The template format this code replays (python/pyrun/runtime/template.py writes it).
pub const FORMAT: u32 = 2;
/// Set on the lines handed to the Python CLI, to the line's template key (or empty): the
/// Python CLI writes templates under that key, for those lines only
/// (python/pyrun/cli/__init__.py's LAUNCHER_ENV).
pub const LAUNCHER_ENV: &str = "PYRUN_NATIVE_LAUNCHER";

const DEFAULT_ROOT: &str = "/var/lib/pyrun";
// Placeholders in the template's texts (NUL never occurs in them otherwise).
const P_ID: &str = "\u{0}ID\u{0}";
const P_SHORT: &str = "\u{0}SHORT\u{0}";
const P_NAME: &str = "\u{0}NAME\u{0}";
const P_CREATED: &str = "\u{0}CREATED\u{0}";

#[derive(Deserialize)]
struct Template {
    format: u32,
    /// [path, dev, ino, size, mtime_ns] of every file the decision read.
    deps: Vec<(String, u64, u64, u64, i64)>,
    /// Directories of the container's directory, in creation order (relative).
    dirs: Vec<String>,
    /// [relative path, mode, text] of its files, container.json last.
    files: Vec<(String, u32, String)>,
    /// The container's runtime directory (on a tmpfs; Store.run_root in Python), its
    /// directories and files (the bundle's config.json, the /etc files) as above.
    run_dir: String,
    run_dirs: Vec<String>,
    run_files: Vec<(String, u32, String)>,
    lowers: Vec<String>,
    links_dir: String,
    volatile: bool,
    /// The container's log (relative), or none (--rm).
    log: Option<String>,
    remove: bool,
    adjectives: Vec<String>,
    surnames: Vec<String>,
}

/// The store root a `pyrun` line names (`--root` among the global options, else $PYRUN_ROOT,
/// else /var/lib/pyrun, as the Python CLI reads them) and its command word.
fn store_root_and_command(args: &[OsString]) -> (PathBuf, Option<&[u8]>) {
    let mut root = None;
    let mut command = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_bytes();
        if a == b"--root" || a == b"--insecure-registry" {
            if a == b"--root" {
                root = args.get(i + 1).map(PathBuf::from);
            }
            i += 1;
        } else if let Some(v) = a.strip_prefix(b"--root=") {
            root = Some(PathBuf::from(OsString::from_vec(v.to_vec())));
        } else if !a.starts_with(b"-") {
            command = Some(a);
            break;
        }
        i += 1;
    }
    let root = root.unwrap_or_else(|| match std::env::var_os("PYRUN_ROOT") {
        Some(r) if !r.is_empty() => PathBuf::from(r),
        _ => PathBuf::from(DEFAULT_ROOT),
    });
    (root, command)
}

/// Environment variables left out of the key: shells and benchmark tools change them from one
/// command to the next, and pyrun reads none of them (a line that passes one into the
/// container, `-e OLDPWD`, gets no template: python/pyrun/runtime/template.py).
pub const UNKEYED_ENV: [&str; 4] = [
    "_",
    "OLDPWD",
    "PWD",
    "HYPERFINE_RANDOMIZED_ENVIRONMENT_OFFSET",
];

/// The template key of a command line: sha256 over the format, the uid, the working directory,
/// the arguments and the environment (sorted, without [`UNKEYED_ENV`]), each NUL-terminated.
pub fn key(uid: u32, cwd: &[u8], args: &[&[u8]], env: &mut Vec<Vec<u8>>) -> String {
    env.retain(|e| {
        let name = e.split(|&c| c == b'=').next().unwrap_or_default();
        !UNKEYED_ENV.iter().any(|u| u.as_bytes() == name)
    });
    env.sort();
    let mut h = Sha256::new();
    for part in [
        format!("pyrun-run-template/{FORMAT}").as_bytes(),
        uid.to_string().as_bytes(),
        cwd,
    ] {
        h.update(part);
        h.update([0]);
    }
    for a in args {
        h.update(a);
        h.update([0]);
    }
    h.update([1]);
    for e in env.iter() {
        h.update(e);
        h.update([0]);
    }
    hex::encode(h.finalize())
}

fn this_key(args: &[OsString]) -> Option<String> {
    let cwd = std::env::current_dir().ok()?;
    let mut env: Vec<Vec<u8>> = std::env::vars_os()
        .map(|(k, v)| {
            let mut e = k.into_vec();
            e.push(b'=');
            e.extend_from_slice(v.as_bytes());
            e
        })
        .collect();
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    Some(key(
        rustix::process::getuid().as_raw(),
        cwd.as_os_str().as_bytes(),
        &args,
        &mut env,
    ))
}

/// Whether every file is as the template saw it: the same (device, inode, size, mtime), or
/// still missing where it recorded (0, 0, 0, 0).
fn unchanged(deps: &[(String, u64, u64, u64, i64)]) -> bool {
    deps.iter().all(
        |(path, dev, ino, size, mtime_ns)| match std::fs::metadata(path) {
            Ok(m) => {
                m.dev() == *dev
                    && m.ino() == *ino
                    && m.size() == *size
                    && m.mtime() * 1_000_000_000 + m.mtime_nsec() == *mtime_ns
            }
            Err(e) => e.kind() == std::io::ErrorKind::NotFound && (*dev, *ino) == (0, 0),
        },
    )
}

/// What [`try_run`] did with a line.
pub enum Outcome {
    /// Replayed from its template: the exit code.
    Replayed(i32),
    /// Left to the Python CLI (nothing was done), with the line's template key when it may
    /// have one: the Python CLI writes the template under that key (it cannot compute the key
    /// itself: Python changes its environment as it starts, LC_CTYPE for one).
    Declined(Option<String>),
}

/// Run `args` (the command line without the program name) from its template when there is a
/// valid one: a `run` line's, or a `build` line's.
pub fn try_run(args: &[OsString]) -> Outcome {
    let (root, command) = store_root_and_command(args);
    let kind = match command {
        Some(b"run") => "run",
        Some(b"build") => "build",
        _ => return Outcome::Declined(None),
    };
    let Some(key) = this_key(args) else {
        return Outcome::Declined(None);
    };
    let text = match std::fs::read(root.join("cache").join(kind).join(format!("{key}.json"))) {
        Ok(text) => text,
        Err(_) => return Outcome::Declined(Some(key)),
    };
    let result = if kind == "run" {
        match serde_json::from_slice::<Template>(&text) {
            Ok(t) if t.format == FORMAT && unchanged(&t.deps) => {
                replay(&root, &t, None, false).map(|r| r.exit_code)
            }
            _ => return Outcome::Declined(Some(key)),
        }
    } else {
        match serde_json::from_slice::<BuildTemplate>(&text) {
            Ok(t) if t.format == FORMAT && t.valid() => t.replay(),
            _ => return Outcome::Declined(Some(key)),
        }
    };
    Outcome::Replayed(match result {
        Ok(code) => code,
        Err((msg, code)) => {
            let _ = writeln!(std::io::stderr(), "Error: {msg}");
            code
        }
    })
}

/// A `pyrun build` line whose every step came from the build cache: what it printed, and what
/// it read (python/pyrun/build/template.py writes it). While none of that changed, the same
/// line builds the same image again from the cache, so printing is all there is to do.
#[derive(Deserialize)]
struct BuildTemplate {
    format: u32,
    /// Files read outside the context: [path, dev, ino, size, mtime_ns] ((0, 0): missing).
    deps: Vec<(String, u64, u64, u64, i64)>,
    /// The context directory and everything under it: [relative path, dev, ino, size,
    /// mtime_ns, mode], sorted by path.
    context: String,
    tree: Vec<(String, u64, u64, u64, i64, u32)>,
    /// Descriptors that must not be terminals (the progress display would differ).
    not_tty: Vec<i32>,
    stdout: String,
    stderr: String,
    /// --iidfile: (path, image ID).
    iidfile: Option<(String, String)>,
}

type TreeEntry = (String, u64, u64, u64, i64, u32);

/// Every entry under `dir` (not following symlinks), as [`BuildTemplate::tree`] lists them;
/// None for a name that is not UTF-8 or a directory that cannot be read.
fn tree(dir: &Path) -> Option<Vec<TreeEntry>> {
    fn walk(base: &Path, rel: &str, out: &mut Vec<TreeEntry>) -> Option<()> {
        for entry in std::fs::read_dir(base.join(rel)).ok()? {
            let entry = entry.ok()?;
            let name = entry.file_name().into_string().ok()?;
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let m = entry.metadata().ok()?;
            out.push((
                path.clone(),
                m.dev(),
                m.ino(),
                m.size(),
                m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                m.mode(),
            ));
            if m.is_dir() {
                walk(base, &path, out)?;
            }
        }
        Some(())
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out)?;
    out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Some(out)
}

impl BuildTemplate {
    fn valid(&self) -> bool {
        // SAFETY: isatty only inspects the descriptor.
        self.not_tty
            .iter()
            .all(|fd| unsafe { libc::isatty(*fd) } == 0)
            && unchanged(&self.deps)
            && tree(Path::new(&self.context)).is_some_and(|t| t == self.tree)
    }

    fn replay(&self) -> Result<i32, (String, i32)> {
        if let Some((path, id)) = &self.iidfile {
            crate::runc::state::write_atomic(Path::new(path), id.as_bytes())
                .map_err(|e| (format!("write {path}: {e}"), 1))?;
        }
        let _ = std::io::stderr().write_all(self.stderr.as_bytes());
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(self.stdout.as_bytes());
        let _ = out.flush();
        Ok(0)
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    let mut filled = 0;
    while filled < bytes {
        // SAFETY: the kernel writes at most bytes - filled bytes into the rest of buf.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), bytes - filled, 0) };
        if n > 0 {
            filled += n as usize;
        }
    }
    hex::encode(buf)
}

/// The names of the store's containers (to pick a new one that is not taken).
fn taken_names(containers: &Path) -> HashSet<String> {
    #[derive(Deserialize)]
    struct Named {
        name: String,
    }
    let mut out = HashSet::new();
    let Ok(dir) = std::fs::read_dir(containers) else {
        return out;
    };
    for entry in dir.flatten() {
        if let Ok(bytes) = std::fs::read(entry.path().join("container.json")) {
            if let Ok(n) = serde_json::from_slice::<Named>(&bytes) {
                out.insert(n.name);
            }
        }
    }
    out
}

fn new_name(t: &Template, taken: &HashSet<String>) -> String {
    for _ in 0..1000 {
        let r = random_hex(4);
        let a = usize::from_str_radix(&r[..4], 16).unwrap_or(0);
        let b = usize::from_str_radix(&r[4..], 16).unwrap_or(0);
        let (Some(adj), Some(sur)) = (
            t.adjectives.get(a % t.adjectives.len().max(1)),
            t.surnames.get(b % t.surnames.len().max(1)),
        ) else {
            break;
        };
        let name = format!("{adj}_{sur}");
        if !taken.contains(&name) {
            return name;
        }
    }
    format!("container_{}", random_hex(4))
}

fn write_new(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(data)
}

/// A replayed run: the exit code and the container's record (container.json) as written.
pub struct Replayed {
    pub exit_code: i32,
    pub record: String,
}

/// Removals handed to background threads ([`remove_later`]) that have not finished yet.
static REMOVING: (std::sync::Mutex<usize>, std::sync::Condvar) =
    (std::sync::Mutex::new(0), std::sync::Condvar::new());

fn removal_done() {
    let mut n = REMOVING.0.lock().unwrap_or_else(|e| e.into_inner());
    *n -= 1;
    if *n == 0 {
        REMOVING.1.notify_all();
    }
}

/// Delete `dir`, already out of the store (a removed container renamed into tmp/, garbage by
/// the store's rules if the process dies first), in a thread of its own: off the caller's
/// path, without the GIL. [`wait_removals`] waits for them all. Errors are dropped: what is
/// left stays garbage in tmp/.
fn remove_later(dir: PathBuf) {
    *REMOVING.0.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    let here = dir.clone();
    let spawned = std::thread::Builder::new()
        .name("pyrun-rm".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let _ = std::fs::remove_dir_all(&dir);
            removal_done();
        });
    if spawned.is_err() {
        // No thread to be had: here, then.
        let _ = std::fs::remove_dir_all(&here);
        removal_done();
    }
}

/// Wait until every removal [`replay_text`] left to a thread has finished (the Python API
/// registers this with atexit).
pub fn wait_removals() {
    let mut n = REMOVING.0.lock().unwrap_or_else(|e| e.into_inner());
    while *n > 0 {
        n = REMOVING.1.wait(n).unwrap_or_else(|e| e.into_inner());
    }
}

/// Replay a run template given as JSON text (the Python API keeps its own in memory), with the
/// container's stdout and stderr on `stdio` (else the caller's): None when the template is not
/// valid any more (nothing was done then), else the run, or its start error (message, code).
/// `defer_removal`: a removed container's directory is deleted by a thread of its own, off
/// the caller's path (see [`wait_removals`]).
pub fn replay_text(
    root: &Path,
    text: &[u8],
    stdio: Option<(i32, i32)>,
    defer_removal: bool,
) -> Option<Result<Replayed, (String, i32)>> {
    let t: Template = serde_json::from_slice(text).ok()?;
    if t.format != FORMAT || !unchanged(&t.deps) {
        return None;
    }
    Some(replay(root, &t, stdio, defer_removal))
}

fn replay(
    root: &Path,
    t: &Template,
    stdio: Option<(i32, i32)>,
    defer_removal: bool,
) -> Result<Replayed, (String, i32)> {
    let engine = |what: &str, e: &dyn std::fmt::Display| (format!("{what}: {e}"), 125);
    let containers = root.join("containers");
    let id = random_hex(32);
    let name = new_name(t, &taken_names(&containers));
    let created = crate::timefmt::now();
    let fill = |text: &str| {
        text.replace(P_ID, &id)
            .replace(P_SHORT, &id[..12])
            .replace(P_NAME, &name)
            .replace(P_CREATED, &created)
    };
    let dir = containers.join(&id);
    // The directory is made whole in tmp/ and renamed into containers/: a kill at any point
    // leaves either garbage in tmp/ (the store's rules drop it) or a whole container.
    let staging = root.join("tmp").join(format!("{id}.new"));
    let made = make_tree(&staging, &t.dirs, &t.files, &fill).and_then(|record| {
        std::fs::rename(&staging, &dir)
            .map_err(|e| engine(&format!("create {}", dir.display()), &e))?;
        Ok(record)
    });
    let record = match made {
        Ok(record) => record,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    // From here on the container exists: a failure is recorded on it (--rm: it goes).
    let state = StateFile::of_this_process(&dir, false);
    let write_state = |fields: serde_json::Value| {
        let serde_json::Value::Object(fields) = fields else {
            unreachable!("state fields are an object")
        };
        state
            .try_write(fields)
            .map_err(|e| engine(&format!("write {}/state.json", dir.display()), &e))
    };
    let run_dir = PathBuf::from(fill(&t.run_dir));
    // --rm: the exit is only recorded when the container cannot be removed after all (a
    // removed container's state is never read): one atomic write fewer on the store's disk.
    let mut exited = None;
    let result = (|| {
        // The runtime directory, made once the container is in the store (a start makes it
        // again; the store's sweep removes one whose container is gone).
        if let Some(parent) = run_dir.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| engine(&format!("create {}", parent.display()), &e))?;
        }
        make_tree(&run_dir, &t.run_dirs, &t.run_files, &fill)?;
        let lowers: Vec<PathBuf> = t.lowers.iter().map(|l| PathBuf::from(fill(l))).collect();
        let rootfs = run_dir.join("rootfs");
        overlay::mount_overlay_opts(
            &lowers,
            &rootfs,
            Some(&dir.join("upper")),
            Some(&dir.join("work")),
            Method::Auto,
            Some(Path::new(&t.links_dir)),
            t.volatile,
        )
        .map_err(|e| engine("mount the container's root", &e))?;
        let started = crate::timefmt::now();
        let run = (|| {
            write_state(serde_json::json!({
                "status": "running", "started_at": started, "restart_count": 0,
            }))?;
            let log = t.log.as_ref().map(|l| dir.join(l));
            match runtime::run_container(
                &run_dir,
                Some(&run_dir.join("pid")),
                stdio,
                false,
                log.as_deref(),
            ) {
                Ok(out) => {
                    let fields = serde_json::json!({
                        "status": "exited", "exit_code": out.exit_code,
                        "oom_killed": out.oom_killed, "cgroup": out.cgroup,
                        "started_at": started, "finished_at": crate::timefmt::now(),
                        "restart_count": 0,
                    });
                    if t.remove {
                        exited = Some(fields);
                    } else {
                        write_state(fields)?;
                    }
                    Ok(out.exit_code)
                }
                // As the Python CLI: a start failure is recorded (125, 126, 127); an OS error
                // from the runtime is reported with 1.
                Err(runtime::Error::Os { msg, .. }) => Err((msg, 1)),
                Err(e) => {
                    let (msg, code) = match e {
                        runtime::Error::Start { msg, code } => (msg, code),
                        other => (format!("invalid container config: {other}"), 125),
                    };
                    write_state(
                        serde_json::json!({"status": "created", "exit_code": code, "error": msg}),
                    )?;
                    Err((msg, code))
                }
            }
        })();
        let _ = overlay::unmount(&rootfs, true);
        run
    })();
    if t.remove {
        let gone = match discard(root, &dir, &run_dir) {
            Ok(gone) => gone,
            Err(e) => {
                if let Some(fields) = exited.take() {
                    let _ = write_state(fields); // it stays: with its exit recorded
                }
                return Err(e);
            }
        };
        if defer_removal {
            remove_later(gone);
        } else {
            std::fs::remove_dir_all(&gone)
                .map_err(|e| (format!("remove {}: {e}", gone.display()), 125))?;
        }
    }
    result.map(|exit_code| Replayed { exit_code, record })
}

/// Make the directory `base` with the template's `dirs` and `files` (placeholders filled);
/// returns the text of its container.json (empty without one).
fn make_tree(
    base: &Path,
    dirs: &[String],
    files: &[(String, u32, String)],
    fill: &dyn Fn(&str) -> String,
) -> Result<String, (String, i32)> {
    let engine = |what: String, e: std::io::Error| (format!("{what}: {e}"), 125);
    std::fs::create_dir(base).map_err(|e| engine(format!("create {}", base.display()), e))?;
    for d in dirs {
        std::fs::create_dir(base.join(d)).map_err(|e| engine(format!("create {d}"), e))?;
    }
    let mut record = String::new();
    for (rel, mode, text) in files {
        let text = fill(text);
        write_new(&base.join(rel), text.as_bytes(), *mode)
            .map_err(|e| engine(format!("write {rel}"), e))?;
        if rel == "container.json" {
            record = text;
        }
    }
    Ok(record)
}

/// Take a stopped container's directory out of the store: renamed into tmp/ (returned, for
/// the caller to delete now or leave to a thread), so that a crash never leaves a half container that looks whole; its
/// runtime directory (a tmpfs: quick) goes at once.
fn discard(root: &Path, dir: &Path, run_dir: &Path) -> Result<PathBuf, (String, i32)> {
    let rootfs = run_dir.join("rootfs");
    let mounted = match (std::fs::metadata(&rootfs), std::fs::metadata(run_dir)) {
        (Ok(r), Ok(d)) => r.dev() != d.dev(),
        _ => false,
    };
    if mounted {
        return Err((
            format!(
                "cannot remove the container: its root is still mounted at {}",
                rootfs.display()
            ),
            125,
        ));
    }
    let trash = root.join("tmp").join(format!(
        "{}-{}.container",
        std::process::id(),
        random_hex(6)
    ));
    std::fs::rename(dir, &trash).map_err(|e| (format!("remove {}: {e}", dir.display()), 125))?;
    let _ = std::fs::remove_dir_all(run_dir); // unmounted (above); the sweep retries
    Ok(trash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ignores_underscore_and_env_order() {
        let args: [&[u8]; 2] = [b"run", b"img"];
        let a = key(
            0,
            b"/w",
            &args,
            &mut vec![
                b"B=2".to_vec(),
                b"A=1".to_vec(),
                b"_=/x".to_vec(),
                b"OLDPWD=/o".to_vec(),
            ],
        );
        let b = key(0, b"/w", &args, &mut vec![b"A=1".to_vec(), b"B=2".to_vec()]);
        assert_eq!(a, b);
        let c = key(0, b"/w", &args, &mut vec![b"A=1".to_vec(), b"B=3".to_vec()]);
        assert_ne!(a, c);
        let d = key(1, b"/w", &args, &mut vec![b"A=1".to_vec(), b"B=2".to_vec()]);
        assert_ne!(a, d);
    }

    #[test]
    fn root_and_command_from_the_global_options() {
        let v = |s: &[&str]| s.iter().map(OsString::from).collect::<Vec<_>>();
        let a = v(&["--root", "/a", "run", "x"]);
        assert_eq!(
            store_root_and_command(&a),
            (PathBuf::from("/a"), Some(&b"run"[..]))
        );
        let b = v(&[
            "--debug",
            "--root=/b",
            "--insecure-registry",
            "h",
            "build",
            ".",
        ]);
        assert_eq!(
            store_root_and_command(&b),
            (PathBuf::from("/b"), Some(&b"build"[..]))
        );
        // After the command word, --root is the container's business.
        let c = v(&["run", "--root", "/c"]);
        assert_ne!(store_root_and_command(&c).0, PathBuf::from("/c"));
        assert_eq!(store_root_and_command(&v(&["-v"])).1, None);
    }
}

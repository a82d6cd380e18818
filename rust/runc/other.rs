//! The inspection and control commands: state, list, ps, pause/resume, update, events, and
//! the bundle helpers spec and features.

use std::io::Read;

use super::args::{flag, parse};
use super::lifecycle::cgroup_of;
use super::state::{self, Container, Status};
use super::{Fail, Global, Res};

/// The runtime-spec version pyrun-runtime implements.
pub const OCI_VERSION: &str = "1.2.0";

fn print_json(v: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into())
    );
}

/// `state ID`: the runtime-spec state JSON.
pub fn state(g: &Global, args: &[String]) -> Res<i32> {
    let p = parse("state", args, &[], false)?;
    let id = p.id("state")?;
    p.max_args("state", 1)?;
    let c = Container::load(&g.root, id)?;
    print_json(&c.state_json(c.status()));
    Ok(0)
}

/// `list`: every container of the root (table, `--format json` or `-q`).
pub fn list(g: &Global, args: &[String]) -> Res<i32> {
    let p = parse(
        "list",
        args,
        &[flag(&["format", "f"], true), flag(&["quiet", "q"], false)],
        false,
    )?;
    p.max_args("list", 0)?;
    let mut rows = Vec::new();
    for id in state::ids(&g.root) {
        if let Ok(c) = Container::load(&g.root, &id) {
            let st = c.status();
            rows.push(c.state_json(st));
        }
    }
    if p.has("quiet") {
        for r in &rows {
            println!("{}", r["id"].as_str().unwrap_or(""));
        }
        return Ok(0);
    }
    match p.get("format").unwrap_or("table") {
        "json" => println!("{}", serde_json::Value::from(rows)),
        "table" => {
            println!(
                "{:<12} {:<8} {:<10} {:<40} {:<30} OWNER",
                "ID", "PID", "STATUS", "BUNDLE", "CREATED"
            );
            for r in &rows {
                println!(
                    "{:<12} {:<8} {:<10} {:<40} {:<30} {}",
                    r["id"].as_str().unwrap_or(""),
                    r["pid"].to_string(),
                    r["status"].as_str().unwrap_or(""),
                    r["bundle"].as_str().unwrap_or(""),
                    r["created"].as_str().unwrap_or(""),
                    r["owner"].as_str().unwrap_or("")
                );
            }
        }
        other => return Err(Fail::msg(format!("invalid format option: {other}"))),
    }
    Ok(0)
}

/// `ps ID [ps options]`: the container's processes (`--format json`: their pids; else the
/// host's `ps` output restricted to them).
pub fn ps(g: &Global, args: &[String]) -> Res<i32> {
    let p = parse("ps", args, &[flag(&["format", "f"], true)], true)?;
    let id = p.id("ps")?;
    let c = Container::load(&g.root, id)?;
    let pids = cgroup_of(&c.saved).map(|m| m.pids()).unwrap_or_default();
    match p.get("format").unwrap_or("table") {
        "json" => {
            println!("{}", serde_json::Value::from(pids));
            Ok(0)
        }
        "table" => {
            let ps_args: Vec<&str> = if p.positional.len() > 1 {
                p.positional[1..].iter().map(String::as_str).collect()
            } else {
                vec!["-ef"]
            };
            let out = std::process::Command::new("ps")
                .args(&ps_args)
                .output()
                .map_err(|e| Fail::msg(format!("run ps: {e}")))?;
            if !out.status.success() {
                return Err(Fail::msg(format!(
                    "ps {}: {}",
                    ps_args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let mut lines = text.lines();
            let header = lines.next().unwrap_or("");
            let col = header
                .split_whitespace()
                .position(|h| h == "PID")
                .ok_or_else(|| Fail::msg("couldn't find PID field in ps output"))?;
            println!("{header}");
            for line in lines {
                let pid: Option<i32> = line
                    .split_whitespace()
                    .nth(col)
                    .and_then(|v| v.parse().ok());
                if pid.is_some_and(|pid| pids.contains(&pid)) {
                    println!("{line}");
                }
            }
            Ok(0)
        }
        other => Err(Fail::msg(format!("invalid format option: {other}"))),
    }
}

/// `pause ID` / `resume ID`: the cgroup freezer (v1 freezer.state, v2 cgroup.freeze).
pub fn pause(g: &Global, args: &[String], frozen: bool) -> Res<i32> {
    let cmd = if frozen { "pause" } else { "resume" };
    let p = parse(cmd, args, &[], false)?;
    let id = p.id(cmd)?;
    p.max_args(cmd, 1)?;
    let c = Container::load(&g.root, id)?;
    match (c.status(), frozen) {
        (Status::Running, true) | (Status::Paused, false) => {}
        (Status::Paused, true) => return Err(Fail::msg("container already paused")),
        (Status::Running, false) => return Err(Fail::msg("container not paused")),
        _ => return Err(Fail::msg("container not running")),
    }
    let m = cgroup_of(&c.saved).ok_or_else(|| Fail::msg("the container has no cgroup"))?;
    m.freeze(frozen).map_err(Fail::msg)?;
    Ok(0)
}

/// `update ID --resources FILE|-` (a runtime-spec LinuxResources object) or the single-value
/// flags: the new limits are written to the container's cgroup.
pub fn update(g: &Global, args: &[String]) -> Res<i32> {
    let p = parse(
        "update",
        args,
        &[
            flag(&["resources", "r"], true),
            flag(&["memory"], true),
            flag(&["memory-swap"], true),
            flag(&["cpu-shares"], true),
            flag(&["cpu-quota"], true),
            flag(&["cpu-period"], true),
            flag(&["cpuset-cpus"], true),
            flag(&["cpuset-mems"], true),
            flag(&["pids-limit"], true),
        ],
        false,
    )?;
    let id = p.id("update")?;
    p.max_args("update", 1)?;
    let c = Container::load(&g.root, id)?;
    if c.status() == Status::Stopped {
        return Err(Fail::msg("container not running"));
    }
    let mut res = match p.get("resources") {
        Some(src) => {
            let mut bytes = Vec::new();
            if src == "-" {
                std::io::stdin()
                    .read_to_end(&mut bytes)
                    .map_err(|e| Fail::msg(format!("read resources from stdin: {e}")))?;
            } else {
                bytes = std::fs::read(src).map_err(|e| Fail::msg(format!("open {src}: {e}")))?;
            }
            let de = &mut serde_json::Deserializer::from_slice(&bytes);
            let r: crate::runtime::spec::Resources = serde_path_to_error::deserialize(de)
                .map_err(|e| Fail::msg(format!("resources: {}: {}", e.path(), e.inner())))?;
            crate::runtime::plan::resources(&r)?
        }
        None => crate::cgroups::Resources::default(),
    };
    // Docker sends every field, 0 meaning "unchanged" (runc writes no file for a 0).
    let nonzero_i = |v: &mut Option<i64>| *v = v.filter(|n| *n != 0);
    let nonzero_u = |v: &mut Option<u64>| *v = v.filter(|n| *n != 0);
    nonzero_i(&mut res.memory_limit);
    nonzero_i(&mut res.memory_swap);
    nonzero_i(&mut res.cpu_quota);
    nonzero_i(&mut res.pids_limit);
    nonzero_u(&mut res.cpu_shares);
    nonzero_u(&mut res.cpu_period);
    let num = |name: &str| -> Res<Option<i64>> {
        match p.get(name) {
            None => Ok(None),
            Some(v) => parse_size(v)
                .map(Some)
                .ok_or_else(|| Fail::msg(format!("invalid value for --{name}: {v:?}"))),
        }
    };
    if let Some(v) = num("memory")? {
        res.memory_limit = Some(v);
    }
    if let Some(v) = num("memory-swap")? {
        res.memory_swap = Some(v);
    }
    if let Some(v) = num("cpu-shares")? {
        res.cpu_shares = Some(v as u64);
    }
    if let Some(v) = num("cpu-quota")? {
        res.cpu_quota = Some(v);
    }
    if let Some(v) = num("cpu-period")? {
        res.cpu_period = Some(v as u64);
    }
    if let Some(v) = num("pids-limit")? {
        res.pids_limit = Some(v);
    }
    if let Some(v) = p.get("cpuset-cpus") {
        res.cpus = Some(v.to_string());
    }
    if let Some(v) = p.get("cpuset-mems") {
        res.mems = Some(v.to_string());
    }
    let path = c
        .saved
        .cgroup
        .as_deref()
        .ok_or_else(|| Fail::msg("the container has no cgroup"))?;
    let mut m = crate::cgroups::manager(std::path::Path::new(crate::cgroups::ROOT), path)
        .map_err(Fail::msg)?;
    m.apply(c.saved.pid, &res).map_err(Fail::msg)?;
    Ok(0)
}

/// "64m", "1g", "1024" → bytes; "-1" stays -1.
fn parse_size(v: &str) -> Option<i64> {
    let v = v.trim().to_ascii_lowercase();
    let (num, mult) = match v.chars().last()? {
        'k' => (&v[..v.len() - 1], 1i64 << 10),
        'm' => (&v[..v.len() - 1], 1 << 20),
        'g' => (&v[..v.len() - 1], 1 << 30),
        'b' => (&v[..v.len() - 1], 1),
        _ => (v.as_str(), 1),
    };
    num.parse::<i64>().ok().map(|n| n * mult)
}

fn stats_event(id: &str, m: &dyn crate::cgroups::Manager) -> serde_json::Value {
    let s = m.stats();
    serde_json::json!({
        "type": "stats",
        "id": id,
        "data": {
            "cpu": {"usage": {"total": s.cpu_usage_ns}},
            "memory": {"usage": {"usage": s.memory_usage, "limit": s.memory_limit, "max": s.memory_max_usage}},
            "pids": {"current": s.pids_current, "limit": s.pids_limit},
        }
    })
}

/// `events ID`: stats as JSON lines every `--interval` (default 5s) until the container
/// stops; `--stats`: once.
pub fn events(g: &Global, args: &[String]) -> Res<i32> {
    let p = parse(
        "events",
        args,
        &[flag(&["stats"], false), flag(&["interval"], true)],
        false,
    )?;
    let id = p.id("events")?;
    p.max_args("events", 1)?;
    let c = Container::load(&g.root, id)?;
    if c.status() == Status::Stopped {
        return Err(Fail::msg(format!("container with id {id} is not running")));
    }
    let m = cgroup_of(&c.saved).ok_or_else(|| Fail::msg("the container has no cgroup"))?;
    if p.has("stats") {
        println!("{}", stats_event(id, m.as_ref()));
        return Ok(0);
    }
    let interval = parse_duration(p.get("interval").unwrap_or("5s"))?;
    let mut oom_seen = m.oom_killed();
    while c.is_alive() {
        println!("{}", stats_event(id, m.as_ref()));
        if !oom_seen && m.oom_killed() {
            oom_seen = true;
            println!("{}", serde_json::json!({"type": "oom", "id": id}));
        }
        std::thread::sleep(interval);
    }
    Ok(0)
}

/// Go-style durations: "5s", "500ms", "1m".
fn parse_duration(v: &str) -> Res<std::time::Duration> {
    let bad = || Fail::msg(format!("invalid duration {v:?}"));
    let (num, unit) = v
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| v.split_at(i))
        .ok_or_else(bad)?;
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    if secs <= 0.0 {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// `spec`: write runc's template config.json (busybox `sh`, terminal) into the bundle.
pub fn spec(_g: &Global, args: &[String]) -> Res<i32> {
    let p = parse(
        "spec",
        args,
        &[flag(&["bundle", "b"], true), flag(&["rootless"], false)],
        false,
    )?;
    p.max_args("spec", 0)?;
    let dir = std::path::PathBuf::from(p.get("bundle").unwrap_or("."));
    let path = dir.join("config.json");
    if path.exists() {
        return Err(Fail::msg("File config.json exists. Remove it first"));
    }
    let v = template(p.has("rootless"));
    let text = serde_json::to_string_pretty(&v).unwrap_or_default();
    state::write_atomic(&path, text.as_bytes())
        .map_err(|e| Fail::msg(format!("write {}: {e}", path.display())))?;
    Ok(0)
}

fn template(rootless: bool) -> serde_json::Value {
    let caps = serde_json::json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    let mut v = serde_json::json!({
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": true,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "runc",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    });
    if rootless {
        let uid = rustix::process::geteuid().as_raw();
        let gid = rustix::process::getegid().as_raw();
        if let Some(ns) = v["linux"]["namespaces"].as_array_mut() {
            ns.push(serde_json::json!({"type": "user"}));
        }
        v["linux"]["uidMappings"] =
            serde_json::json!([{"containerID": 0, "hostID": uid, "size": 1}]);
        v["linux"]["gidMappings"] =
            serde_json::json!([{"containerID": 0, "hostID": gid, "size": 1}]);
        v["linux"]["resources"] = serde_json::json!({});
        // sysfs cannot be mounted without the network namespace's owner: bind the host's.
        if let Some(m) = v["mounts"].as_array_mut() {
            m.truncate(5);
            m.push(serde_json::json!({"destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}));
        }
    }
    v
}

/// `features`: what this runtime implements (runtime-spec features.md).
pub fn features(_g: &Global, args: &[String]) -> Res<i32> {
    let p = parse("features", args, &[], false)?;
    p.max_args("features", 0)?;
    let caps: Vec<String> = (0..=40u32)
        .map(|n| crate::runtime::caps::name(n).to_string())
        .filter(|n| n.starts_with("CAP_"))
        .collect();
    let v = serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": [
            "async", "atime", "bind", "defaults", "dev", "diratime", "exec", "iversion", "loud",
            "mand", "noatime", "nodev", "nodiratime", "noexec", "noiversion", "nomand",
            "norelatime", "nostrictatime", "nosuid", "nosymfollow", "private", "rbind",
            "relatime", "remount", "ro", "rprivate", "rshared", "rslave", "runbindable",
            "rro", "rrw", "rnosuid", "rsuid", "rnodev", "rdev", "rnoexec", "rexec",
            "rnoatime", "ratime", "rstrictatime", "rnodiratime", "rdiratime",
            "rnosymfollow", "rsymfollow", "rw", "shared", "silent", "slave", "strictatime",
            "suid", "symfollow", "unbindable"
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": true, "systemdUser": false, "rdma": false},
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"]
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
            "intelRdt": {"enabled": false},
            "mountExtensions": {"idmap": {"enabled": false}}
        },
        "annotations": {
            "io.github.pyrun.runtime": "pyrun-runtime",
            "org.opencontainers.runc.version": env!("CARGO_PKG_VERSION")
        }
    });
    print_json(&v);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64m"), Some(64 << 20));
        assert_eq!(parse_size("-1"), Some(-1));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_duration("500ms").unwrap().as_millis(), 500);
        assert!(parse_duration("5").is_err());
    }

    #[test]
    fn template_parses_as_a_spec() {
        for rootless in [false, true] {
            let bytes = serde_json::to_vec(&template(rootless)).unwrap();
            crate::runtime::spec::parse(&bytes).unwrap();
        }
    }
}

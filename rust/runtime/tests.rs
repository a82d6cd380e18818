//! Runtime tests. Those that create namespaces and mounts need root and the busybox test image
//! (ci/test-images.sh); without them they print why and return.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::child::{Failure, Step};
use super::overlay::{self, Method};
use super::{describe, plan, run_container, Error};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn busybox_tar() -> Option<PathBuf> {
    let p = match std::env::var_os("PYRUN_TEST_BUSYBOX_TAR") {
        Some(v) => PathBuf::from(v),
        None => PathBuf::from("/var/cache/pyrun-test/busybox.tar"),
    };
    p.exists().then_some(p)
}

/// Root and the busybox image, or a printed reason to skip.
fn can_run(test: &str) -> Option<PathBuf> {
    if !is_root() {
        eprintln!("{test}: skipped: needs root (namespaces and mounts)");
        return None;
    }
    let tar = busybox_tar();
    if tar.is_none() {
        eprintln!("{test}: skipped: no busybox test image (run ci/test-images.sh)");
    }
    tar
}

fn config(args: &[&str]) -> serde_json::Value {
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "args": args,
            "env": ["PATH=/bin:/usr/bin"],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]
            },
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs"},
        "hostname": "rt",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "mode=755", "size=1m"]}
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"},
                           {"type": "ipc"}, {"type": "network"}],
            "maskedPaths": ["/proc/keys"],
            "readonlyPaths": ["/proc/sys"]
        }
    })
}

fn bundle(dir: &Path, tar: Option<&Path>, cfg: &serde_json::Value) -> PathBuf {
    let b = dir.join("bundle");
    let rootfs = b.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    if let Some(tar) = tar {
        crate::layers::extract::extract_layer(
            &crate::layers::stream::Source::Path(tar.to_path_buf()),
            &rootfs,
            &Default::default(),
        )
        .unwrap();
    }
    std::fs::write(b.join("config.json"), cfg.to_string()).unwrap();
    b
}

fn plan_of(cfg: &serde_json::Value) -> Result<plan::Plan, Error> {
    let d = tempfile::tempdir().unwrap();
    let b = bundle(d.path(), None, cfg);
    plan::build(&b)
}

#[test]
fn plan_validation() {
    let mut c = config(&["true"]);
    c["linux"]["namespaces"] = json!([{"type": "pid"}]);
    let e = plan_of(&c).err().unwrap();
    assert!(
        matches!(&e, Error::Value(m) if m.contains("mount namespace")),
        "{e}"
    );

    let mut c = config(&["true"]);
    c["linux"]["namespaces"] = json!([{"type": "mount", "path": "/proc/self/ns/mnt"}]);
    let e = plan_of(&c).err().unwrap();
    assert!(
        matches!(&e, Error::Value(m) if m.contains("by path")),
        "{e}"
    );

    let mut c = config(&["true"]);
    c["linux"]["namespaces"] = json!([{"type": "mount"}]);
    let e = plan_of(&c).err().unwrap();
    assert!(
        matches!(&e, Error::Value(m) if m.contains("hostname")),
        "{e}"
    );

    let mut c = config(&["true"]);
    c["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    let e = plan_of(&c).err().unwrap();
    assert!(
        matches!(&e, Error::Value(m) if m.contains("linux.uidMappings")),
        "{e}"
    );

    let mut c = config(&["true"]);
    c["process"]["terminal"] = json!(true);
    assert!(plan_of(&c).is_ok_and(|p| p.terminal));

    let mut c = config(&["true"]);
    c["mounts"][1]["destination"] = json!("dev");
    let e = plan_of(&c).err().unwrap();
    assert!(
        matches!(&e, Error::Value(m) if m.contains("mounts[1].destination")),
        "{e}"
    );

    let mut c = config(&["true"]);
    c["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/b", "type": "bind", "source": "/no/such/dir"}));
    let e = plan_of(&c).err().unwrap();
    assert!(
        matches!(&e, Error::Start { msg, .. } if msg.contains("/no/such/dir")),
        "{e}"
    );

    let p = plan_of(&config(&["true"])).unwrap();
    assert!(p.dev_tmpfs);
    assert_eq!(p.exec.argv.len(), 2);
    assert!(p.exec.argv[1].is_null());
    assert_eq!(p.exec.search_path, b"/bin:/usr/bin");
}

#[test]
fn failure_messages() {
    let p = plan_of(&config(&["nosuch"])).unwrap();
    let f = Failure::new(Step::Mount, 0, rustix::io::Errno::PERM);
    assert_eq!(
        describe(&p, &f),
        "mount /proc (proc) failed: Operation not permitted"
    );
    let mut f = Failure::new(Step::Mount, 1, rustix::io::Errno::INVAL);
    f.detail[..20].copy_from_slice(b"tmpfs: Bad value\nfor");
    f.detail_len = 20;
    assert_eq!(
        describe(&p, &f),
        "mount /dev (tmpfs) failed: Invalid argument (tmpfs: Bad value for)"
    );
    let f = Failure::new(Step::ExecNotFound, 0, rustix::io::Errno::NOENT);
    assert_eq!(
        describe(&p, &f),
        "exec: \"nosuch\": executable file not found in $PATH"
    );
    let f = Failure::new(Step::MountSymlink, 0, rustix::io::Errno::LOOP);
    assert_eq!(
        describe(&p, &f),
        "mount target /proc is a symlink in the image"
    );
}

#[test]
fn run_exit_codes_and_failures() {
    let Some(tar) = can_run("run_exit_codes_and_failures") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let b = bundle(d.path(), Some(&tar), &config(&["sh", "-c", "exit 3"]));
    assert_eq!(
        run_container(&b, None, None, false, None)
            .unwrap()
            .exit_code,
        3
    );

    std::fs::write(b.join("config.json"), config(&["nosuch"]).to_string()).unwrap();
    let e = run_container(&b, None, None, false, None).unwrap_err();
    assert!(matches!(&e, Error::Start { code: 127, .. }), "{e}");

    std::fs::write(b.join("config.json"), config(&["/etc/passwd"]).to_string()).unwrap();
    let e = run_container(&b, None, None, false, None).unwrap_err();
    assert!(matches!(&e, Error::Start { code: 126, .. }), "{e}");

    let mut c = config(&["true"]);
    c["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/x", "type": "nosuchfs"}));
    std::fs::write(b.join("config.json"), c.to_string()).unwrap();
    let e = run_container(&b, None, None, false, None).unwrap_err();
    assert!(
        matches!(&e, Error::Start { code: 125, msg } if msg.starts_with("mount /x (nosuchfs) failed: No such device")),
        "{e}"
    );
}

#[test]
fn run_sees_its_own_world() {
    let Some(tar) = can_run("run_sees_its_own_world") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let script = "echo $$ > /out; hostname >> /out; \
                  wc -c < /proc/keys >> /out; ls /proc/self/fd >> /out";
    let b = bundle(d.path(), Some(&tar), &config(&["sh", "-c", script]));
    let pid_file = d.path().join("pid");
    assert_eq!(
        run_container(&b, Some(&pid_file), None, false, None)
            .unwrap()
            .exit_code,
        0
    );
    let out = std::fs::read_to_string(b.join("rootfs/out")).unwrap();
    assert_eq!(out, "1\nrt\n0\n0\n1\n2\n3\n");
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    assert!(pid > 1);
}

#[test]
fn runs_from_many_threads() {
    let Some(tar) = can_run("runs_from_many_threads") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let b = bundle(d.path(), Some(&tar), &config(&["sh", "-c", "exit 5"]));
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        // Threads that allocate all the time: a child that touched the allocator after clone
        // would sooner or later deadlock on a lock one of them held.
        for _ in 0..2 {
            s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let v: Vec<Vec<u8>> = (0..100).map(|i| vec![0u8; 100 + i]).collect();
                    std::hint::black_box(v);
                }
            });
        }
        let runners: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    (0..5)
                        .map(|_| {
                            run_container(&b, None, None, false, None)
                                .unwrap()
                                .exit_code
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for r in runners {
            assert_eq!(r.join().unwrap(), vec![5; 5]);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

fn overlay_case(method: Method) {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n);
    for n in ["l1", "l2", "l3", "up", "work", "mnt"] {
        std::fs::create_dir(p(n)).unwrap();
    }
    std::fs::write(p("l3/a"), "3").unwrap();
    std::fs::write(p("l2/a"), "2").unwrap();
    std::fs::write(p("l1/b"), "1").unwrap();
    let used = overlay::mount_overlay(
        &[p("l1"), p("l2"), p("l3")],
        &p("mnt"),
        Some(&p("up")),
        Some(&p("work")),
        method,
        Some(&p("links")),
    )
    .unwrap();
    assert_eq!(
        used,
        if method == Method::Legacy {
            "legacy"
        } else {
            "new"
        }
    );
    assert_eq!(std::fs::read_to_string(p("mnt/a")).unwrap(), "2");
    std::fs::write(p("mnt/c"), "c").unwrap();
    overlay::unmount(&p("mnt"), false).unwrap();
    assert_eq!(std::fs::read_to_string(p("up/c")).unwrap(), "c");
    assert!(!p("mnt/a").exists());
    overlay::unmount(&p("mnt"), true).unwrap();
}

#[test]
fn overlay_mounts() {
    if !is_root() {
        eprintln!("overlay_mounts: skipped: needs root (mount)");
        return;
    }
    overlay_case(Method::New);
    overlay_case(Method::Legacy);
    overlay_case(Method::Auto);
}

use std::fs;
use std::path::Path;

use super::v1::V1Manager;
use super::v2::V2Manager;
use super::*;

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap().trim().to_string()
}

/// A fake v1 tree: one directory per controller with the files the kernel would create.
fn v1_tree(root: &Path, memsw: bool) {
    for c in v1::CONTROLLERS {
        let d = root.join(c);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("cgroup.procs"), "").unwrap();
    }
    fs::write(root.join("cpuset/cpuset.cpus"), "0-1\n").unwrap();
    fs::write(root.join("cpuset/cpuset.mems"), "0\n").unwrap();
    let _ = memsw;
}

/// Pre-create a v1 cgroup dir with the kernel's files (a temp dir does not make them).
fn v1_dir(root: &Path, ctrl: &str, path: &str, files: &[(&str, &str)]) {
    let mut d = root.join(ctrl);
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        d.push(comp);
        fs::create_dir_all(&d).unwrap();
        for (f, v) in files {
            if !d.join(f).exists() {
                fs::write(d.join(f), v).unwrap();
            }
        }
    }
}

fn full() -> Resources {
    Resources {
        memory_limit: Some(16 << 20),
        memory_swap: Some(32 << 20),
        cpu_shares: Some(512),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        cpus: Some("0".into()),
        mems: None,
        pids_limit: Some(10),
        device_rules: Vec::new(),
    }
}

#[test]
fn v1_writes_limits_and_joins_every_controller() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    v1_tree(root, true);
    v1_dir(
        root,
        "memory",
        "/pyrun/c1",
        &[("memory.memsw.limit_in_bytes", "")],
    );
    v1_dir(
        root,
        "cpuset",
        "/pyrun/c1",
        &[("cpuset.cpus", ""), ("cpuset.mems", "")],
    );
    let mut m = V1Manager::new(root, "/pyrun/c1");
    m.apply(4242, &full()).unwrap();
    let d = |c: &str| root.join(c).join("pyrun/c1");
    assert_eq!(read(&d("memory").join("memory.limit_in_bytes")), "16777216");
    assert_eq!(
        read(&d("memory").join("memory.memsw.limit_in_bytes")),
        "33554432"
    );
    assert_eq!(read(&d("cpu").join("cpu.shares")), "512");
    assert_eq!(read(&d("cpu").join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read(&d("cpu").join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(&d("cpuset").join("cpuset.cpus")), "0");
    // mems copied from the parents, level by level.
    assert_eq!(read(&root.join("cpuset/pyrun/cpuset.mems")), "0");
    assert_eq!(read(&root.join("cpuset/pyrun/cpuset.cpus")), "0-1");
    assert_eq!(read(&d("cpuset").join("cpuset.mems")), "0");
    assert_eq!(read(&d("pids").join("pids.max")), "10");
    for c in v1::CONTROLLERS.iter().filter(|c| **c != "devices") {
        assert_eq!(read(&d(c).join("cgroup.procs")), "4242", "{c}");
    }
    assert_eq!(m.path(), "/pyrun/c1");
    assert!(!m.oom_killed());
    fs::write(
        d("memory").join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
    )
    .unwrap();
    assert!(m.oom_killed());
}

#[test]
fn v1_oom_heuristic_without_counter() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    v1_tree(root, false);
    let mut m = V1Manager::new(root, "/pyrun/c2");
    let res = Resources {
        memory_limit: Some(8 << 20),
        ..Default::default()
    };
    m.apply(1, &res).unwrap();
    let d = root.join("memory/pyrun/c2");
    fs::write(
        d.join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\n",
    )
    .unwrap();
    fs::write(d.join("memory.failcnt"), "0\n").unwrap();
    assert!(!m.oom_killed());
    fs::write(d.join("memory.failcnt"), "3\n").unwrap();
    assert!(m.oom_killed());
}

#[test]
fn v1_swap_without_accounting_is_a_clear_error() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    v1_tree(root, false);
    let mut m = V1Manager::new(root, "/pyrun/c3");
    let res = Resources {
        memory_limit: Some(8 << 20),
        memory_swap: Some(16 << 20),
        ..Default::default()
    };
    let e = m.apply(1, &res).unwrap_err();
    assert!(e.contains("memory.memsw.limit_in_bytes is missing"), "{e}");
    // Without a swap request the missing file does not matter.
    let mut m = V1Manager::new(root, "/pyrun/c4");
    m.apply(
        1,
        &Resources {
            memory_limit: Some(8 << 20),
            ..Default::default()
        },
    )
    .unwrap();
}

#[test]
fn v1_write_error_names_the_file() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    v1_tree(root, false);
    // A directory where the file should be: the write fails.
    v1_dir(root, "pids", "/pyrun/c5", &[]);
    fs::create_dir(root.join("pids/pyrun/c5/pids.max")).unwrap();
    let mut m = V1Manager::new(root, "/pyrun/c5");
    let e = m
        .apply(
            1,
            &Resources {
                pids_limit: Some(5),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(e.starts_with("cgroup: write pids.max=5: "), "{e}");
}

#[test]
fn v1_destroy_removes_the_leaf_dirs() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    v1_tree(root, false);
    let mut m = V1Manager::new(root, "/pyrun/c6");
    m.apply(
        1,
        &Resources {
            pids_limit: Some(-1),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(read(&root.join("pids/pyrun/c6/pids.max")), "max");
    // rmdir on a real cgroupfs removes the kernel's files with it; here remove them first.
    for c in v1::CONTROLLERS.iter().filter(|c| **c != "devices") {
        let d = root.join(c).join("pyrun/c6");
        for e in fs::read_dir(&d).unwrap() {
            fs::remove_file(e.unwrap().path()).unwrap();
        }
    }
    m.destroy().unwrap();
    for c in v1::CONTROLLERS.iter().filter(|c| **c != "devices") {
        assert!(!root.join(c).join("pyrun/c6").exists(), "{c}");
        assert!(root.join(c).join("pyrun").exists(), "{c}");
    }
}

fn v2_tree(root: &Path, controllers: &str) {
    fs::write(root.join("cgroup.controllers"), controllers).unwrap();
    fs::write(root.join("cgroup.subtree_control"), "").unwrap();
    let p = root.join("pyrun");
    fs::create_dir_all(&p).unwrap();
    fs::write(p.join("cgroup.subtree_control"), "").unwrap();
    let d = p.join("c1");
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("memory.swap.max"), "max").unwrap();
}

#[test]
fn v2_writes_limits_and_enables_controllers() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    v2_tree(root, "cpuset cpu io memory hugetlb pids rdma misc\n");
    let mut m = V2Manager::new(root, "/pyrun/c1");
    m.apply(77, &full()).unwrap();
    let d = root.join("pyrun/c1");
    assert_eq!(
        read(&root.join("cgroup.subtree_control")),
        "+memory +cpu +cpuset +pids"
    );
    assert_eq!(
        read(&root.join("pyrun/cgroup.subtree_control")),
        "+memory +cpu +cpuset +pids"
    );
    assert_eq!(read(&d.join("memory.max")), "16777216");
    // swap.max = (memory + swap) - memory.
    assert_eq!(read(&d.join("memory.swap.max")), "16777216");
    assert_eq!(
        read(&d.join("cpu.weight")),
        shares_to_weight(512).to_string()
    );
    assert_eq!(read(&d.join("cpu.max")), "50000 100000");
    assert_eq!(read(&d.join("cpuset.cpus")), "0");
    assert_eq!(read(&d.join("pids.max")), "10");
    assert_eq!(read(&d.join("cgroup.procs")), "77");
    assert!(!m.oom_killed());
    fs::write(
        d.join("memory.events"),
        "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n",
    )
    .unwrap();
    assert!(m.oom_killed());
    for e in fs::read_dir(&d).unwrap() {
        fs::remove_file(e.unwrap().path()).unwrap();
    }
    m.destroy().unwrap();
    assert!(!d.exists());
    assert!(root.join("pyrun").exists());
}

#[test]
fn v2_unlimited_values_and_swap_arithmetic() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    v2_tree(root, "memory cpu pids");
    let mut m = V2Manager::new(root, "/pyrun/c1");
    let res = Resources {
        memory_limit: Some(1 << 30),
        memory_swap: Some(-1),
        cpu_quota: Some(-1),
        cpu_period: Some(100_000),
        pids_limit: Some(-1),
        ..Default::default()
    };
    m.apply(1, &res).unwrap();
    let d = root.join("pyrun/c1");
    assert_eq!(read(&d.join("memory.swap.max")), "max");
    assert_eq!(read(&d.join("cpu.max")), "max 100000");
    assert_eq!(read(&d.join("pids.max")), "max");
    let mut m = V2Manager::new(root, "/pyrun/c1");
    let res = Resources {
        memory_limit: Some(64 << 20),
        memory_swap: Some(64 << 20),
        ..Default::default()
    };
    m.apply(1, &res).unwrap();
    assert_eq!(read(&d.join("memory.swap.max")), "0");
    let res = Resources {
        memory_limit: Some(64 << 20),
        memory_swap: Some(32 << 20),
        ..Default::default()
    };
    assert!(m
        .apply(1, &res)
        .unwrap_err()
        .contains("below the memory limit"));
}

#[test]
fn v2_missing_controller_is_an_error() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    v2_tree(root, "memory pids");
    let mut m = V2Manager::new(root, "/pyrun/c1");
    let e = m
        .apply(
            1,
            &Resources {
                cpus: Some("0".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(e.contains("cpuset controller is not available"), "{e}");
}

#[test]
fn cpu_weight_conversion_matches_runc() {
    assert_eq!(shares_to_weight(0), 0);
    assert_eq!(shares_to_weight(1), 1);
    assert_eq!(shares_to_weight(2), 1);
    assert_eq!(shares_to_weight(1024), 100);
    assert_eq!(shares_to_weight(262_144), 10_000);
    assert_eq!(shares_to_weight(1_000_000), 10_000);
    // Between the fixed points: ceil(10^((l^2 + 125 l) / 612 - 7/34)), l = log2(shares).
    assert_eq!(shares_to_weight(512), 59);
    assert_eq!(shares_to_weight(2048), 174);
}

#[test]
fn paths_are_normalised() {
    assert_eq!(normalize("pyrun/abc").unwrap(), "/pyrun/abc");
    assert_eq!(normalize("//pyrun//abc/").unwrap(), "/pyrun/abc");
    assert!(normalize("/pyrun/../x").is_err());
    assert!(normalize("/").is_err());
}

#[test]
fn keyed_files() {
    assert_eq!(
        keyed_value("under_oom 0\noom_kill 3\n", "oom_kill"),
        Some(3)
    );
    assert_eq!(keyed_value("under_oom 0\n", "oom_kill"), None);
}

#[test]
fn dirs_of_process_maps_v1_and_unified_lines() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    for d in ["memory", "cpu,cpuacct", "systemd", "unified", "pids"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
        std::fs::write(root.join(d).join("cgroup.procs"), "").unwrap();
    }
    let text = "12:memory:/pyrun/abc\n4:cpu,cpuacct:/pyrun/abc\n1:name=systemd:/user.slice\n\
                0::/pyrun/abc\n7:blkio:/x\n3:pids:/../etc\n";
    let dirs = super::dirs_of_process(root, text);
    assert_eq!(
        dirs,
        vec![
            root.join("memory/pyrun/abc"),
            root.join("cpu,cpuacct/pyrun/abc"),
            root.join("systemd/user.slice"),
            root.join("unified/pyrun/abc"),
        ]
    );
}

#[test]
fn v1_device_rules_freezer_and_existing() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    v1_tree(root, false);
    v1_dir(root, "freezer", "/c7", &[("freezer.state", "THAWED")]);
    let mut m = V1Manager::new(root, "/c7");
    let res = Resources {
        device_rules: vec![(false, "a *:* rwm".into()), (true, "c 1:3 rwm".into())],
        ..Default::default()
    };
    m.apply(7, &res).unwrap();
    // A plain file keeps only the last write: the allow rule came after the deny.
    assert_eq!(read(&root.join("devices/c7/devices.allow")), "c 1:3 rwm");
    assert_eq!(read(&root.join("devices/c7/devices.deny")), "a *:* rwm");
    let e = super::existing(root, "/c7").unwrap();
    assert_eq!(e.pids(), vec![7]);
    e.freeze(true).unwrap();
    assert!(e.frozen());
    e.freeze(false).unwrap();
    assert!(!e.frozen());
}

#[test]
fn mkdirs_reports_what_it_made() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path();
    assert_eq!(
        mkdirs(base, "/pyrun/a").unwrap(),
        vec![base.join("pyrun"), base.join("pyrun/a")]
    );
    assert_eq!(
        mkdirs(base, "/pyrun/b").unwrap(),
        vec![base.join("pyrun/b")]
    );
    assert!(mkdirs(base, "pyrun/b").unwrap().is_empty());
    assert!(mkdirs(base, "/").unwrap().is_empty());
    fs::write(base.join("file"), "").unwrap();
    assert!(mkdirs(base, "/file/x").unwrap_err().contains("file/x"));
}

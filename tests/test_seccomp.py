"""Seccomp: pyrun's default profile (Docker's effect) on busybox containers, custom Docker-format
profile files, raw `linux.seccomp` sections compiled by the runtime (argument filters, errors
that name the field), and the profile conversion itself."""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from helpers import PyrunRunner, needs_root
from pyrun import _core
from pyrun.client import Client
from pyrun.runtime.seccomp import ProfileError, convert, default_profile
from pyrun.runtime.spec import DEFAULT_CAPS, RunOptions, SpecError, build_spec

root_only = needs_root


@pytest.fixture
def bb(client: Client, busybox_tar: Path) -> Client:
    client.images.import_image(busybox_tar, "bb:sec")
    return client


def sh(c: Client, script: str, **kw: Any) -> str:
    out: bytes = c.containers.run("bb:sec", ["sh", "-c", script], remove=True, **kw)
    return out.decode()


def field(text: str, name: str) -> str:
    m = re.search(rf"^{name}:\s*(\S+)$", text, re.M)
    assert m, text
    return m.group(1)


# --- the default profile in containers -------------------------------------------------------


@root_only
def test_default_profile_is_on_and_a_normal_workload_runs(bb: Client) -> None:
    out = sh(bb, "echo ok; ls / >/dev/null; date >/dev/null; cat /proc/self/status")
    assert out.startswith("ok\n")
    assert field(out, "Seccomp") == "2"
    assert field(out, "Seccomp_filters") == "1"


@root_only
def test_default_profile_denies_namespaces_and_mounts(bb: Client) -> None:
    script = (
        "unshare -U true 2>&1; echo unshare=$?; "
        "mount -t tmpfs none /tmp 2>&1; echo mount=$?; linux32 true; echo linux32=$?"
    )
    out = sh(bb, script)
    assert "unshare(0x10000000): Operation not permitted" in out
    assert "unshare=1" in out and "mount=1" in out
    assert "permission denied" in out  # busybox's words for EPERM from mount(2)
    assert "linux32=0" in out  # personality(PER_LINUX32) is on the allowed list
    # Unconfined containers have no filter: the user namespace is allowed.
    out = sh(bb, script, security_opt=["seccomp=unconfined"])
    assert "unshare=0" in out
    status = sh(bb, "cat /proc/self/status", security_opt=["seccomp=unconfined"])
    assert field(status, "Seccomp") == "0"


@root_only
def test_cap_sys_admin_opens_the_gated_group(bb: Client) -> None:
    out = sh(
        bb,
        "unshare -U true; echo unshare=$?; mount -t tmpfs none /tmp && echo mounted; "
        "cat /proc/self/status",
        cap_add=["SYS_ADMIN"],
    )
    assert "unshare=0" in out and "mounted" in out
    assert field(out, "Seccomp") == "2"


@root_only
def test_filter_with_non_root_user_and_with_no_new_privileges(bb: Client) -> None:
    # Without no_new_privs the filter goes in before the credentials change (it needs
    # CAP_SYS_ADMIN); with it, last before exec.
    out = sh(bb, "id -u; cat /proc/self/status", user="nobody")
    assert out.startswith("65534\n") and field(out, "Seccomp") == "2"
    out = sh(bb, "cat /proc/self/status", security_opt=["no-new-privileges"])
    assert field(out, "NoNewPrivs") == "1" and field(out, "Seccomp") == "2"


@root_only
def test_custom_profile_file(bb: Client, tmp_path: Path) -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["chroot"], "action": "SCMP_ACT_ERRNO", "excludes": {"caps": ["CAP_CHOWN"]}},
        ],
    }
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile))
    out = sh(
        bb,
        "mkdir /x 2>&1; echo mkdir=$?; touch /y; echo touch=$?; chroot / true; echo chroot=$?",
        security_opt=[f"seccomp={path}"],
    )
    assert "Operation not permitted" in out and "mkdir=1" in out
    assert "touch=0" in out and "chroot=0" in out


@root_only
def test_bad_profile_file_is_one_line_exit_125(
    pyrun: PyrunRunner, busybox_tar: Path, tmp_path: Path
) -> None:
    assert pyrun("import", str(busybox_tar), "bb:cli").returncode == 0
    res = pyrun("run", "--rm", "--security-opt", "seccomp=/nonexistent.json", "bb:cli", "true")
    assert res.returncode == 125
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "/nonexistent.json" in res.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"]}]}')
    res = pyrun("run", "--rm", "--security-opt", f"seccomp={bad}", "bb:cli", "true")
    assert res.returncode == 125
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert str(bad) in res.stderr and "syscalls[0].action" in res.stderr
    bad.write_text("{not json")
    res = pyrun("run", "--rm", "--security-opt", f"seccomp={bad}", "bb:cli", "true")
    assert res.returncode == 125 and "invalid JSON" in res.stderr


# --- raw linux.seccomp sections through _core.run_container ----------------------------------


def raw_spec(script: str, seccomp: dict[str, Any] | None, **process: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "ociVersion": "1.2.0",
        "process": {
            "args": ["sh", "-c", script],
            "env": ["PATH=/bin:/usr/bin:/sbin:/usr/sbin"],
            "cwd": "/",
            "capabilities": {k: DEFAULT_CAPS for k in ("bounding", "effective", "permitted")},
            **process,
        },
        "root": {"path": "rootfs"},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": t} for t in ("pid", "mount", "ipc", "uts")]},
    }
    if seccomp is not None:
        cfg["linux"]["seccomp"] = seccomp
    return cfg


def run_raw(bundle: Path, cfg: dict[str, Any]) -> tuple[int, str]:
    """Run with stdout+stderr captured together; returns (status, output)."""
    (bundle / "config.json").write_text(json.dumps(cfg))
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as out:
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(out.fileno(), 1)
            os.dup2(out.fileno(), 2)
            rc = _core.run_container(str(bundle))
        finally:
            for fd, s in zip((1, 2), saved, strict=True):
                os.dup2(s, fd)
                os.close(s)
        out.seek(0)
        return rc, out.read().decode()


@root_only
def test_argument_filters(bundle: Path) -> None:
    # setpriority(PRIO_PROCESS, 0, nice): allowed up to nice 5; personality only PER_LINUX.
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {
                "names": ["setpriority"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 2, "value": 5, "op": "SCMP_CMP_LE"}],
            },
            {"names": ["setpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {
                "names": ["personality"],
                "action": "SCMP_ACT_ERRNO",
                "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_NE"}],
            },
        ],
    }
    script = (
        "renice 3 $$; echo n3=$?; renice 7 $$; echo n7=$?; "
        "linux32 true; echo l32=$?; linux64 true; echo l64=$?"
    )
    rc, out = run_raw(bundle, raw_spec(script, profile))
    assert rc == 0, out
    assert "n3=0" in out and "n7=0" not in out and "Permission denied" in out
    assert "l32=1" in out and "l64=0" in out
    rc, out = run_raw(bundle, raw_spec(script, None))
    assert "n7=0" in out and "l32=0" in out


@root_only
def test_kill_action_and_a_refused_execve(bundle: Path) -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["uname"], "action": "SCMP_ACT_KILL_PROCESS"}],
    }
    rc, _ = run_raw(bundle, raw_spec("exec uname", profile))
    assert rc == 128 + 31  # SIGSYS
    # A filter that refuses execve fails the start with the filter's errno, whichever place
    # the filter was installed at (no_new_privs: last; without: before the credentials).
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["execve"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}],
    }
    for nnp in (True, False):
        with pytest.raises(_core.StartError, match=r"(?i)function not implemented"):
            run_raw(bundle, raw_spec("true", profile, noNewPrivileges=nnp))


@root_only
@pytest.mark.parametrize(
    ("seccomp", "field_path"),
    [
        ({"syscalls": []}, "linux.seccomp"),
        ({"defaultAction": "SCMP_ACT_BOGUS"}, "linux.seccomp.defaultAction"),
        (
            {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_NOPE"]},
            "linux.seccomp.architectures[0]",
        ),
        (
            {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"]}]},
            "linux.seccomp.syscalls[0]",
        ),
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {
                        "names": ["read"],
                        "action": "SCMP_ACT_ERRNO",
                        "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ALMOST"}],
                    }
                ],
            },
            "linux.seccomp.syscalls[0].args[0].op",
        ),
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0}]}
                ],
            },
            "linux.seccomp.syscalls[0].args[0]",
        ),
    ],
)
def test_malformed_sections_name_the_field(
    bundle: Path, seccomp: dict[str, Any], field_path: str
) -> None:
    (bundle / "config.json").write_text(json.dumps(raw_spec("true", seccomp)))
    with pytest.raises(ValueError, match=re.escape(field_path)):
        _core.run_container(str(bundle))


# --- profile conversion ------------------------------------------------------------------------


def rules_for(profile: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [r for r in profile["syscalls"] if name in r["names"]]


def test_default_profile_shape() -> None:
    p = default_profile(DEFAULT_CAPS)
    assert p["defaultAction"] == "SCMP_ACT_ERRNO" and p["defaultErrnoRet"] == 1
    allowed = {n for r in p["syscalls"] if "args" not in r for n in r["names"]}
    assert len(allowed) > 350
    assert {"read", "execve", "chroot", "ptrace"} <= allowed
    assert not {"mount", "unshare", "setns", "bpf", "reboot", "init_module"} & allowed
    [clone] = rules_for(p, "clone")
    assert clone["args"] == [
        {"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}
    ]
    [clone3] = rules_for(p, "clone3")
    assert clone3["action"] == "SCMP_ACT_ERRNO" and clone3["errnoRet"] == 38
    [sock] = rules_for(p, "socket")
    assert {a["value"] for a in sock["args"]} == {38, 40}
    assert all(a["op"] == "SCMP_CMP_NE" for a in sock["args"])
    assert len(rules_for(p, "personality")) == 5

    admin = default_profile([*DEFAULT_CAPS, "CAP_SYS_ADMIN", "CAP_SYS_TIME"])
    allowed = {n for r in admin["syscalls"] if "args" not in r for n in r["names"]}
    assert {"mount", "unshare", "setns", "clone", "clone3", "settimeofday"} <= allowed
    assert all(r["action"] == "SCMP_ACT_ALLOW" for r in rules_for(admin, "clone3"))


def test_spec_options(tmp_path: Path) -> None:
    def linux(**kw: Any) -> dict[str, Any]:
        spec = build_spec({}, str(tmp_path), RunOptions(command=["true"], **kw), "c" * 64)
        section: dict[str, Any] = spec["linux"]
        return section

    assert linux()["seccomp"] == default_profile(DEFAULT_CAPS)
    assert "seccomp" not in linux(privileged=True)  # as Docker: privileged is unconfined
    assert "seccomp" not in linux(security_opt=["seccomp=unconfined"])
    assert "seccomp" not in linux(security_opt=["seccomp:unconfined"])
    both = linux(security_opt=["no-new-privileges:true", "seccomp=unconfined"])
    assert "seccomp" not in both
    with pytest.raises(SpecError, match="only no-new-privileges and seccomp"):
        linux(security_opt=["apparmor=unconfined"])


def test_convert_arch_map_includes_and_errors() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
        ],
        "syscalls": [
            {"name": "read", "action": "SCMP_ACT_ALLOW"},
            {"names": ["a"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm64"]}},
            {"names": ["b"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "9.0"}},
            {"names": ["c"], "action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": "9.0"}},
        ],
    }
    out = convert(profile, [], machine="aarch64", kernel="6.1.0-13-arm64")
    assert out["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert [r["names"] for r in out["syscalls"]] == [["read"], ["a"], ["c"]]
    out = convert(profile, [], machine="x86_64", kernel="10.2")
    assert out["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]
    assert [r["names"] for r in out["syscalls"]] == [["read"], ["b"]]

    bad: list[tuple[Any, str]] = [
        ([], "profile"),
        ({}, "defaultAction"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {}}, "syscalls"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_ALLOW"}]}, "syscalls[0].names"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 9, "value": 0, "op": "SCMP_CMP_EQ"}]}]}, "syscalls[0].args[0].index"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": "CAP_X"}}]}, "syscalls[0].includes.caps"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_NEW_LISTENER"]}, "flags[0]"),
    ]  # fmt: skip
    for prof, where in bad:
        with pytest.raises(ProfileError, match=re.escape(where)):
            convert(prof, [], machine="x86_64", kernel="6.1")

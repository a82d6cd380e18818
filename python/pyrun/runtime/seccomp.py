"""Seccomp profiles: pyrun's default profile (the effect of Docker's default: deny with EPERM
except an allowlist, with capability-gated groups) and the conversion of Docker-format profile
files into the runtime-spec `linux.seccomp` object that the runtime compiles to BPF."""

from __future__ import annotations

import os
import re
from typing import Any


def _words(text: str) -> list[str]:
    return text.split()


# Syscalls every container may make, whatever its capabilities.
ALLOWED = _words("""
accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown chown32
clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64
clock_nanosleep clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2
dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait
epoll_wait_old eventfd eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64
fadvise64_64 fallocate fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchown32 fchownat
fcntl fcntl64 fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstat64
fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futex_requeue futex_time64
futex_wait futex_waitv futex_wake futimesat get_robust_list get_thread_area getcpu getcwd
getdents getdents64 getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups getgroups32
getitimer getpeername getpgid getpgrp getpid getppid getpriority getrandom getresgid
getresgid32 getresuid getresuid32 getrlimit getrusage getsid getsockname getsockopt gettid
gettimeofday getuid getuid32 getxattr getxattrat inotify_add_watch inotify_init inotify_init1
inotify_rm_watch io_cancel io_destroy io_getevents io_pgetevents io_pgetevents_time64 io_setup
io_submit ioctl ioprio_get ioprio_set ipc kill landlock_add_rule landlock_create_ruleset
landlock_restrict_self lchown lchown32 lgetxattr link linkat listen listxattr listxattrat
llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64 madvise map_shadow_stack
membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall
mmap mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64
mq_timedsend mq_timedsend_time64 mq_unlink mremap mseal msgctl msgget msgrcv msgsnd msync
munlock munlockall munmap name_to_handle_at nanosleep newfstatat _newselect open openat openat2
pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll
ppoll_time64 prctl pread64 preadv preadv2 prlimit64 process_mrelease pselect6 pselect6_time64
pwrite64 pwritev pwritev2 read readahead readlink readlinkat readv recv recvfrom recvmmsg
recvmmsg_time64 recvmsg remap_file_pages removexattr removexattrat rename renameat renameat2
restart_syscall rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo
rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo
sched_get_priority_max sched_get_priority_min sched_getaffinity sched_getattr sched_getparam
sched_getscheduler sched_rr_get_interval sched_rr_get_interval_time64 sched_setaffinity
sched_setattr sched_setparam sched_setscheduler sched_yield seccomp select semctl semget semop
semtimedop semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto set_robust_list
set_thread_area set_tid_address setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32
setgroups setgroups32 setitimer setpgid setpriority setregid setregid32 setresgid setresgid32
setresuid setresuid32 setreuid setreuid32 setrlimit setsid setsockopt setuid setuid32 setxattr
setxattrat shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4 sigprocmask
sigreturn socketcall socketpair splice stat stat64 statfs statfs64 statx symlink symlinkat sync
sync_file_range syncfs sysinfo tee tgkill time timer_create timer_delete timer_getoverrun
timer_gettime timer_gettime64 timer_settime timer_settime64 timerfd_create timerfd_gettime
timerfd_gettime64 timerfd_settime timerfd_settime64 times tkill truncate truncate64 ugetrlimit
umask uname unlink unlinkat uretprobe utime utimensat utimensat_time64 utimes vfork vmsplice
wait4 waitid waitpid write writev
""")

# Syscalls allowed only to containers holding the capability.
CAP_GATED: dict[str, list[str]] = {
    "CAP_SYS_ADMIN": _words(
        "bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount "
        "mount_setattr move_mount open_tree perf_event_open quotactl quotactl_fd setdomainname "
        "sethostname setns syslog umount umount2 unshare"
    ),
    "CAP_SYS_BOOT": ["reboot"],
    "CAP_SYS_CHROOT": ["chroot"],
    "CAP_SYS_MODULE": ["delete_module", "init_module", "finit_module"],
    "CAP_SYS_PACCT": ["acct"],
    "CAP_SYS_PTRACE": [
        "kcmp",
        "pidfd_getfd",
        "process_madvise",
        "process_vm_readv",
        "process_vm_writev",
        "ptrace",
    ],
    "CAP_SYS_RAWIO": ["iopl", "ioperm"],
    "CAP_SYS_TIME": ["settimeofday", "stime", "clock_settime", "clock_settime64"],
    "CAP_SYS_TTY_CONFIG": ["vhangup"],
    "CAP_SYS_NICE": ["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"],
    "CAP_SYSLOG": ["syslog"],
    "CAP_BPF": ["bpf"],
    "CAP_PERFMON": ["perf_event_open"],
    "CAP_DAC_READ_SEARCH": ["open_by_handle_at"],
}

CLONE_NAMESPACE_FLAGS = (
    0x7E020000  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
)
AF_ALG = 38
AF_VSOCK = 40
ENOSYS = 38
# PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and the query value 0xffffffff.
PERSONALITIES = [0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF]


def _eq(index: int, value: int, op: str = "SCMP_CMP_EQ") -> dict[str, Any]:
    return {"index": index, "value": value, "op": op}


ALLOW = "SCMP_ACT_ALLOW"

# pyrun's default profile, in Docker's profile-file format.
DEFAULT_PROFILE: dict[str, Any] = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 1,
    "archMap": [
        {
            "architecture": "SCMP_ARCH_X86_64",
            "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        },
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
    ],
    "syscalls": [
        {"names": ALLOWED, "action": ALLOW},
        {
            "names": ["socket"],
            "action": ALLOW,
            "args": [_eq(0, AF_VSOCK, "SCMP_CMP_NE"), _eq(0, AF_ALG, "SCMP_CMP_NE")],
        },
        *({"names": ["personality"], "action": ALLOW, "args": [_eq(0, p)]} for p in PERSONALITIES),
        {
            "names": ["process_vm_readv", "process_vm_writev", "ptrace"],
            "action": ALLOW,
            "includes": {"minKernel": "4.8"},
        },
        {
            "names": ["arch_prctl", "modify_ldt"],
            "action": ALLOW,
            "includes": {"arches": ["amd64", "x32", "x86"]},
        },
        {
            "names": [
                "arm_fadvise64_64",
                "arm_sync_file_range",
                "sync_file_range2",
                "breakpoint",
                "cacheflush",
                "set_tls",
            ],
            "action": ALLOW,
            "includes": {"arches": ["arm", "arm64"]},
        },
        *(
            {"names": names, "action": ALLOW, "includes": {"caps": [cap]}}
            for cap, names in CAP_GATED.items()
        ),
        {
            "names": ["clone"],
            "action": ALLOW,
            "args": [
                {
                    "index": 0,
                    "value": CLONE_NAMESPACE_FLAGS,
                    "valueTwo": 0,
                    "op": "SCMP_CMP_MASKED_EQ",
                }
            ],
            "excludes": {"caps": ["CAP_SYS_ADMIN"]},
        },
        {
            # glibc falls back to clone, whose flags the rule above can inspect.
            "names": ["clone3"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": ENOSYS,
            "excludes": {"caps": ["CAP_SYS_ADMIN"]},
        },
    ],
}

ACTIONS = {
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_LOG",
}
OPS = {
    "SCMP_CMP_EQ",
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_GT",
    "SCMP_CMP_GE",
    "SCMP_CMP_MASKED_EQ",
}
FLAGS = {"SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"}

# os.uname().machine -> (Docker's arch name for includes/excludes, the native SCMP arch).
_MACHINES = {
    "x86_64": ("amd64", "SCMP_ARCH_X86_64"),
    "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
    "arm64": ("arm64", "SCMP_ARCH_AARCH64"),
}


class ProfileError(ValueError):
    """A profile that does not have Docker's format; the message names the field."""


def _version(text: str) -> tuple[int, ...]:
    m = re.match(r"(\d+)(?:\.(\d+))?", text)
    if not m:
        raise ValueError(text)
    return tuple(int(g or 0) for g in m.groups())


def _get(d: dict[str, Any], key: str, default: Any) -> Any:
    """d[key], or `default` when it is missing or null (an empty value is checked as given)."""
    value = d.get(key)
    return default if value is None else value


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProfileError(f"{where}: expected a list of strings")
    return list(value)


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProfileError(f"{where}: expected an object")
    return value


def _errno(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 4095:
        raise ProfileError(f"{where}: expected an errno number 0..4095")
    return value


def _applies(rule: dict[str, Any], where: str, caps: set[str], arch: str, kernel: str) -> bool:
    """Docker's includes/excludes: every included cap and arch present, no excluded one."""
    for key in ("includes", "excludes"):
        cond = _obj(_get(rule, key, {}), f"{where}.{key}")
        rule_caps = set(_strings(_get(cond, "caps", []), f"{where}.{key}.caps"))
        arches = _strings(_get(cond, "arches", []), f"{where}.{key}.arches")
        min_kernel = cond.get("minKernel")
        if min_kernel is not None:
            if not isinstance(min_kernel, str):
                raise ProfileError(f'{where}.{key}.minKernel: expected a string like "4.8"')
            try:
                newer = _version(kernel) >= _version(min_kernel)
            except ValueError:
                raise ProfileError(
                    f"{where}.{key}.minKernel: {min_kernel!r} is not a kernel version"
                ) from None
        if key == "includes":
            if not rule_caps <= caps or (arches and arch not in arches):
                return False
            if min_kernel is not None and not newer:
                return False
        else:
            if rule_caps & caps or arch in arches:
                return False
            if min_kernel is not None and newer:
                return False
    return True


def _args(value: Any, where: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ProfileError(f"{where}: expected a list")
    out = []
    for j, a in enumerate(value):
        aw = f"{where}[{j}]"
        a = _obj(a, aw)
        arg: dict[str, Any] = {}
        for key, limit in (("index", 5), ("value", 2**64 - 1), ("valueTwo", 2**64 - 1)):
            v = a.get(key, 0 if key == "valueTwo" else None)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= limit:
                raise ProfileError(f"{aw}.{key}: expected an integer 0..{limit}")
            arg[key] = v
        if a.get("op") not in OPS:
            raise ProfileError(f"{aw}.op: expected one of {', '.join(sorted(OPS))}")
        arg["op"] = a["op"]
        out.append(arg)
    return out


def convert(
    profile: Any,
    caps: list[str],
    *,
    machine: str | None = None,
    kernel: str | None = None,
) -> dict[str, Any]:
    """A Docker-format profile -> the runtime-spec `linux.seccomp` object for a container
    with capabilities `caps`. Raises ProfileError naming the offending field."""
    profile = _obj(profile, "profile")
    docker_arch, native = _MACHINES.get(machine or os.uname().machine, ("", ""))
    kernel = kernel or os.uname().release
    cap_set = set(caps)
    default = profile.get("defaultAction")
    if default not in ACTIONS:
        raise ProfileError(f"defaultAction: expected one of {', '.join(sorted(ACTIONS))}")
    out: dict[str, Any] = {"defaultAction": default}
    if profile.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = _errno(profile["defaultErrnoRet"], "defaultErrnoRet")
    arches = _strings(_get(profile, "architectures", []), "architectures")
    arch_map = _get(profile, "archMap", [])
    if not isinstance(arch_map, list):
        raise ProfileError("archMap: expected a list")
    for i, entry in enumerate(arch_map):
        entry = _obj(entry, f"archMap[{i}]")
        main = entry.get("architecture")
        if not isinstance(main, str):
            raise ProfileError(f"archMap[{i}].architecture: expected a string")
        subs = _strings(_get(entry, "subArchitectures", []), f"archMap[{i}].subArchitectures")
        if main == native:
            arches += [main, *subs]
    if arches:
        out["architectures"] = arches
    flags = _strings(_get(profile, "flags", []), "flags")
    for i, f in enumerate(flags):
        if f not in FLAGS:
            raise ProfileError(f"flags[{i}]: unsupported flag {f!r}")
    if flags:
        out["flags"] = flags
    syscalls = _get(profile, "syscalls", [])
    if not isinstance(syscalls, list):
        raise ProfileError("syscalls: expected a list")
    rules = []
    for i, rule in enumerate(syscalls):
        where = f"syscalls[{i}]"
        rule = _obj(rule, where)
        if "names" in rule:
            names = _strings(rule["names"], f"{where}.names")
        elif isinstance(rule.get("name"), str):
            names = [rule["name"]]
        else:
            raise ProfileError(f"{where}.names: required (a list of syscall names)")
        if not names:
            raise ProfileError(f"{where}.names: must not be empty")
        action = rule.get("action")
        if action not in ACTIONS:
            raise ProfileError(f"{where}.action: expected one of {', '.join(sorted(ACTIONS))}")
        args = _args(rule.get("args"), f"{where}.args")
        if not _applies(rule, where, cap_set, docker_arch, kernel):
            continue
        r: dict[str, Any] = {"names": names, "action": action}
        if rule.get("errnoRet") is not None:
            r["errnoRet"] = _errno(rule["errnoRet"], f"{where}.errnoRet")
        if args:
            r["args"] = args
        rules.append(r)
    out["syscalls"] = rules
    return out


def default_profile(caps: list[str]) -> dict[str, Any]:
    """The runtime-spec `linux.seccomp` object of pyrun's default profile for a container
    with capabilities `caps` (names like "CAP_SYS_ADMIN")."""
    return convert(DEFAULT_PROFILE, caps)

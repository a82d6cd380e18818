//! Compile the runtime-spec `linux.seccomp` section into a classic BPF program, in the parent
//! before clone; the child only hands the finished program to seccomp(2).
//!
//! Layout of the program:
//!
//! ```text
//!   ld arch; jeq AUDIT_ARCH_X86_64 -> [x86_64]; jeq AUDIT_ARCH_I386 -> [x86]; ...
//!   ret KILL_PROCESS                                 (an architecture not listed)
//! [x86_64]  ld nr; jge 0x40000000 -> [x32] (or KILL_PROCESS when x32 is not listed)
//!           rules with arguments, in the spec's order (first match wins)
//!           ld nr; binary search over ranges of the argument-free rules' numbers -> ret ACTION
//!           (else ret defaultAction)
//! ```
//!
//! Precedence: for one syscall, rules with arguments are tried first (in the order given),
//! then the first rule without arguments, then the default action. Names an architecture
//! does not have are skipped for it, as libseccomp does. 64-bit argument comparisons check
//! both 32-bit halves; on 32-bit architectures only the low half exists.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use super::seccomp_tables;
use super::spec::{Seccomp, SeccompArg};
use super::Error;

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// A compiled filter: the program and the `SECCOMP_FILTER_FLAG_*` bits for seccomp(2).
#[derive(Clone, Debug)]
pub struct Filter {
    pub program: Vec<SockFilter>,
    pub flags: u32,
}

pub const BPF_MAXINSNS: usize = 4096;

pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
pub const RET_KILL_THREAD: u32 = 0x0000_0000;
pub const RET_TRAP: u32 = 0x0003_0000;
pub const RET_ERRNO: u32 = 0x0005_0000;
pub const RET_TRACE: u32 = 0x7ff0_0000;
pub const RET_LOG: u32 = 0x7ffc_0000;
pub const RET_ALLOW: u32 = 0x7fff_0000;

pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;
pub const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
pub const AUDIT_ARCH_ARM: u32 = 0x4000_0028;

pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

// Classic BPF opcodes.
const LD_W_ABS: u16 = 0x20;
const ALU_AND_K: u16 = 0x54;
const JMP_JA: u16 = 0x05;
const JMP_JEQ_K: u16 = 0x15;
const JMP_JGT_K: u16 = 0x25;
const JMP_JGE_K: u16 = 0x35;
const RET_K: u16 = 0x06;

// Offsets in `struct seccomp_data` (little-endian: the low half of an argument comes first).
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;

/// The architectures the compiler knows, with the audit arch the kernel reports for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    X86,
    X32,
    Aarch64,
    Arm,
}

impl Arch {
    fn table(self) -> Option<&'static [(&'static str, u32)]> {
        match self {
            Arch::X86_64 => Some(seccomp_tables::X86_64),
            Arch::X86 => Some(seccomp_tables::X86),
            Arch::X32 => Some(seccomp_tables::X32),
            Arch::Aarch64 => Some(seccomp_tables::AARCH64),
            Arch::Arm => None,
        }
    }

    fn is_32bit(self) -> bool {
        matches!(self, Arch::X86 | Arch::Arm)
    }

    /// The architectures a process on a `self` kernel may call the kernel as.
    fn compatible(self) -> &'static [Arch] {
        match self {
            Arch::X86_64 | Arch::X86 | Arch::X32 => &[Arch::X86_64, Arch::X86, Arch::X32],
            Arch::Aarch64 | Arch::Arm => &[Arch::Aarch64, Arch::Arm],
        }
    }

    pub fn native() -> Arch {
        if cfg!(target_arch = "aarch64") {
            Arch::Aarch64
        } else {
            Arch::X86_64
        }
    }

    /// Position in [`Numbers`]; None for an architecture without a table.
    fn slot(self) -> Option<usize> {
        match self {
            Arch::X86_64 => Some(0),
            Arch::X86 => Some(1),
            Arch::X32 => Some(2),
            Arch::Aarch64 => Some(3),
            Arch::Arm => None,
        }
    }

    pub fn number(self, name: &str) -> Option<u32> {
        self.slot().and_then(|i| numbers(name)?[i])
    }
}

/// A syscall's number on each architecture with a table (see [`Arch::slot`]).
type Numbers = [Option<u32>; 4];

/// All tables in one map, built once per process: one lookup per name resolves every
/// architecture.
fn numbers(name: &str) -> Option<Numbers> {
    static INDEX: OnceLock<HashMap<&'static str, Numbers>> = OnceLock::new();
    let index = INDEX.get_or_init(|| {
        let mut m: HashMap<&'static str, Numbers> = HashMap::with_capacity(512);
        for arch in [Arch::X86_64, Arch::X86, Arch::X32, Arch::Aarch64] {
            let (Some(table), Some(i)) = (arch.table(), arch.slot()) else {
                continue;
            };
            for (name, nr) in table {
                m.entry(name).or_insert([None; 4])[i] = Some(*nr);
            }
        }
        m
    });
    index.get(name).copied()
}

/// `SCMP_ARCH_*` -> Some(arch) for the ones compiled, None for ones valid but never native
/// here (they are ignored), Err for unknown names.
fn parse_arch(name: &str) -> Result<Option<Arch>, ()> {
    Ok(Some(match name {
        "SCMP_ARCH_X86_64" => Arch::X86_64,
        "SCMP_ARCH_X86" => Arch::X86,
        "SCMP_ARCH_X32" => Arch::X32,
        "SCMP_ARCH_AARCH64" => Arch::Aarch64,
        "SCMP_ARCH_ARM" => Arch::Arm,
        "SCMP_ARCH_NATIVE" => Arch::native(),
        "SCMP_ARCH_MIPS"
        | "SCMP_ARCH_MIPS64"
        | "SCMP_ARCH_MIPS64N32"
        | "SCMP_ARCH_MIPSEL"
        | "SCMP_ARCH_MIPSEL64"
        | "SCMP_ARCH_MIPSEL64N32"
        | "SCMP_ARCH_PPC"
        | "SCMP_ARCH_PPC64"
        | "SCMP_ARCH_PPC64LE"
        | "SCMP_ARCH_S390"
        | "SCMP_ARCH_S390X"
        | "SCMP_ARCH_PARISC"
        | "SCMP_ARCH_PARISC64"
        | "SCMP_ARCH_RISCV64"
        | "SCMP_ARCH_LOONGARCH64"
        | "SCMP_ARCH_M68K"
        | "SCMP_ARCH_SH"
        | "SCMP_ARCH_SHEB" => return Ok(None),
        _ => return Err(()),
    }))
}

fn audit_arch(a: Arch) -> u32 {
    match a {
        Arch::X86_64 | Arch::X32 => AUDIT_ARCH_X86_64,
        Arch::X86 => AUDIT_ARCH_I386,
        Arch::Aarch64 => AUDIT_ARCH_AARCH64,
        Arch::Arm => AUDIT_ARCH_ARM,
    }
}

fn bad(field: &str, msg: impl std::fmt::Display) -> Error {
    Error::Value(format!("config.json: linux.seccomp.{field}: {msg}"))
}

/// The seccomp return value of an action name.
fn action(field: &str, name: &str, errno: Option<u32>) -> Result<u32, Error> {
    let data = |default: u32| -> Result<u32, Error> {
        let e = errno.unwrap_or(default);
        if e > 4095 {
            return Err(bad(field, format!("errno {e} is above 4095")));
        }
        Ok(e)
    };
    Ok(match name {
        "SCMP_ACT_ALLOW" => RET_ALLOW,
        "SCMP_ACT_ERRNO" => RET_ERRNO | data(libc::EPERM as u32)?,
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => RET_KILL_THREAD,
        "SCMP_ACT_KILL_PROCESS" => RET_KILL_PROCESS,
        "SCMP_ACT_TRAP" => RET_TRAP,
        "SCMP_ACT_LOG" => RET_LOG,
        // Without a tracer attached the kernel fails the call with ENOSYS.
        "SCMP_ACT_TRACE" => RET_TRACE | data(0)?,
        "SCMP_ACT_NOTIFY" => {
            return Err(bad(
                field,
                "SCMP_ACT_NOTIFY is not supported (no seccomp agent)",
            ))
        }
        other => return Err(bad(field, format!("unknown action {other:?}"))),
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    MaskedEq,
}

#[derive(Clone, Copy, Debug)]
struct Cmp {
    index: u32,
    op: Op,
    value: u64,
    value_two: u64,
}

fn parse_arg(field: &str, a: &SeccompArg) -> Result<Cmp, Error> {
    if a.index > 5 {
        return Err(bad(
            &format!("{field}.index"),
            format!("{} is not an argument index 0..5", a.index),
        ));
    }
    let op = match a.op.as_str() {
        "SCMP_CMP_EQ" => Op::Eq,
        "SCMP_CMP_NE" => Op::Ne,
        "SCMP_CMP_LT" => Op::Lt,
        "SCMP_CMP_LE" => Op::Le,
        "SCMP_CMP_GT" => Op::Gt,
        "SCMP_CMP_GE" => Op::Ge,
        "SCMP_CMP_MASKED_EQ" => Op::MaskedEq,
        other => {
            return Err(bad(
                &format!("{field}.op"),
                format!("unknown operator {other:?}"),
            ))
        }
    };
    Ok(Cmp {
        index: a.index,
        op,
        value: a.value,
        value_two: a.value_two,
    })
}

struct Rule {
    /// The numbers of the rule's names; names no table knows are left out.
    nrs: Vec<Numbers>,
    ret: u32,
    args: Vec<Cmp>,
}

/// The last few profiles this process compiled, with their filters: a process that starts
/// many containers (the Python API, a monitor's restarts) mostly gives the same profile
/// (Docker's default) again, and compiling it is most of a plan's cost.
static COMPILED: std::sync::Mutex<Vec<(Seccomp, Filter)>> = std::sync::Mutex::new(Vec::new());
const COMPILED_KEPT: usize = 4;

/// Parse and validate `linux.seccomp`, then compile it for this machine's architectures.
pub fn compile(s: &Seccomp) -> Result<Filter, Error> {
    {
        let kept = COMPILED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, f)) = kept.iter().find(|(p, _)| p == s) {
            return Ok(f.clone());
        }
    }
    let filter = compile_for(s, Arch::native())?;
    let mut kept = COMPILED.lock().unwrap_or_else(|e| e.into_inner());
    if kept.len() >= COMPILED_KEPT {
        kept.remove(0);
    }
    kept.push((s.clone(), filter.clone()));
    Ok(filter)
}

pub fn compile_for(s: &Seccomp, native: Arch) -> Result<Filter, Error> {
    if s.listener_path.as_deref().is_some_and(|p| !p.is_empty()) {
        return Err(bad("listenerPath", "seccomp agents are not supported"));
    }
    let default = action("defaultAction", &s.default_action, s.default_errno_ret)?;
    let mut flags = 0u32;
    for (i, f) in s.flags.iter().enumerate() {
        flags |= match f.as_str() {
            "SECCOMP_FILTER_FLAG_TSYNC" => 1,
            "SECCOMP_FILTER_FLAG_LOG" => 2,
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => 4,
            other => {
                return Err(bad(
                    &format!("flags[{i}]"),
                    format!("unsupported flag {other:?}"),
                ))
            }
        };
    }
    let mut arches: Vec<Arch> = Vec::new();
    for (i, a) in s.architectures.iter().enumerate() {
        match parse_arch(a) {
            Err(()) => {
                return Err(bad(
                    &format!("architectures[{i}]"),
                    format!("unknown architecture {a:?}"),
                ))
            }
            Ok(Some(a)) if native.compatible().contains(&a) && !arches.contains(&a) => {
                arches.push(a)
            }
            Ok(_) => {}
        }
    }
    if arches.is_empty() {
        arches.push(native);
    }
    let mut rules = Vec::with_capacity(s.syscalls.len());
    for (i, r) in s.syscalls.iter().enumerate() {
        let field = format!("syscalls[{i}]");
        if r.names.is_empty() {
            return Err(bad(&format!("{field}.names"), "must not be empty"));
        }
        let ret = action(&format!("{field}.action"), &r.action, r.errno_ret)?;
        let mut args = Vec::with_capacity(r.args.len());
        for (j, a) in r.args.iter().enumerate() {
            args.push(parse_arg(&format!("{field}.args[{j}]"), a)?);
        }
        rules.push(Rule {
            nrs: r.names.iter().filter_map(|n| numbers(n)).collect(),
            ret,
            args,
        });
    }
    let program = assemble(&build(&rules, &arches, default))
        .map_err(|m| Error::Value(format!("config.json: linux.seccomp: {m}")))?;
    Ok(Filter { program, flags })
}

// --- a tiny assembler with labels ----------------------------------------------------------

type Label = usize;

#[derive(Clone, Copy, Debug)]
enum Target {
    Next,
    To(Label),
}

#[derive(Clone, Copy, Debug)]
enum Ins {
    Stmt(u16, u32),
    Jump(u16, u32, Target, Target),
    Ja(Label),
    Here(Label),
}

struct Asm {
    code: Vec<Ins>,
    labels: usize,
}

impl Asm {
    fn label(&mut self) -> Label {
        self.labels += 1;
        self.labels - 1
    }
    fn here(&mut self, l: Label) {
        self.code.push(Ins::Here(l));
    }
    fn ld(&mut self, off: u32) {
        self.code.push(Ins::Stmt(LD_W_ABS, off));
    }
    fn ret(&mut self, v: u32) {
        self.code.push(Ins::Stmt(RET_K, v));
    }
    fn jmp(&mut self, code: u16, k: u32, t: Target, f: Target) {
        self.code.push(Ins::Jump(code, k, t, f));
    }
}

fn assemble(a: &Asm) -> Result<Vec<SockFilter>, String> {
    let mut pos = vec![usize::MAX; a.labels];
    let mut n = 0;
    for ins in &a.code {
        match ins {
            Ins::Here(l) => pos[*l] = n,
            _ => n += 1,
        }
    }
    if n > BPF_MAXINSNS {
        return Err(format!(
            "the compiled filter has {n} instructions, more than the kernel's {BPF_MAXINSNS}"
        ));
    }
    let mut out = Vec::with_capacity(n);
    for ins in &a.code {
        let at = out.len();
        let off = |t: Target| -> Result<u8, String> {
            match t {
                Target::Next => Ok(0),
                Target::To(l) => u8::try_from(pos[l] - at - 1)
                    .map_err(|_| "internal error: a conditional jump is too long".to_string()),
            }
        };
        match *ins {
            Ins::Here(_) => {}
            Ins::Stmt(code, k) => out.push(SockFilter {
                code,
                jt: 0,
                jf: 0,
                k,
            }),
            Ins::Jump(code, k, t, f) => out.push(SockFilter {
                code,
                jt: off(t)?,
                jf: off(f)?,
                k,
            }),
            Ins::Ja(l) => out.push(SockFilter {
                code: JMP_JA,
                jt: 0,
                jf: 0,
                k: (pos[l] - at - 1) as u32,
            }),
        }
    }
    Ok(out)
}

/// One argument comparison: falls through (or jumps to `pass`) when it holds, jumps to `fail`
/// otherwise. Clobbers A.
fn emit_cmp(a: &mut Asm, c: &Cmp, fail: Label, wide: bool) {
    let lo_off = OFF_ARGS + 8 * c.index;
    let hi_off = lo_off + 4;
    let (vlo, vhi) = (c.value as u32, (c.value >> 32) as u32);
    let pass = a.label();
    let (f, p, next) = (Target::To(fail), Target::To(pass), Target::Next);
    match c.op {
        Op::Eq | Op::Ne => {
            let (miss, hit) = if c.op == Op::Eq { (f, next) } else { (p, f) };
            if wide {
                a.ld(hi_off);
                a.jmp(JMP_JEQ_K, vhi, next, miss);
            }
            a.ld(lo_off);
            a.jmp(JMP_JEQ_K, vlo, hit, miss);
        }
        Op::MaskedEq => {
            let (mlo, mhi) = (c.value as u32, (c.value >> 32) as u32);
            let (wlo, whi) = (c.value_two as u32, (c.value_two >> 32) as u32);
            if wide {
                a.ld(hi_off);
                a.code.push(Ins::Stmt(ALU_AND_K, mhi));
                a.jmp(JMP_JEQ_K, whi, next, f);
            }
            a.ld(lo_off);
            a.code.push(Ins::Stmt(ALU_AND_K, mlo));
            a.jmp(JMP_JEQ_K, wlo, next, f);
        }
        Op::Gt | Op::Ge | Op::Lt | Op::Le => {
            // Above/below on the high half decides; equal high halves defer to the low half.
            let greater_wins = matches!(c.op, Op::Gt | Op::Ge);
            let (above, below) = if greater_wins { (p, f) } else { (f, p) };
            if wide {
                a.ld(hi_off);
                a.jmp(JMP_JGT_K, vhi, above, next);
                a.jmp(JMP_JEQ_K, vhi, next, below);
            }
            a.ld(lo_off);
            match c.op {
                Op::Gt => a.jmp(JMP_JGT_K, vlo, p, f),
                Op::Ge => a.jmp(JMP_JGE_K, vlo, p, f),
                Op::Lt => a.jmp(JMP_JGE_K, vlo, f, p),
                _ => a.jmp(JMP_JGT_K, vlo, f, p),
            }
        }
    }
    a.here(pass);
}

/// The rules of one architecture: conditional rules in order, then a binary search over the
/// argument-free ones, then the default.
fn emit_arch(a: &mut Asm, rules: &[Rule], arch: Arch, default: u32) {
    let wide = !arch.is_32bit();
    // nr -> ret of the first argument-free rule naming it.
    let mut plain: BTreeMap<u32, u32> = BTreeMap::new();
    let Some(slot) = arch.slot() else {
        a.ret(default);
        return;
    };
    for r in rules {
        for nrs in &r.nrs {
            let Some(nr) = nrs[slot] else {
                continue;
            };
            if r.args.is_empty() {
                plain.entry(nr).or_insert(r.ret);
                continue;
            }
            let end = a.label();
            a.ld(OFF_NR);
            a.jmp(JMP_JEQ_K, nr, Target::Next, Target::To(end));
            for c in &r.args {
                emit_cmp(a, c, end, wide);
            }
            a.ret(r.ret);
            a.here(end);
        }
    }
    // Runs of consecutive numbers with the same action: most of an allowlist is a few ranges.
    let mut runs: Vec<Run> = Vec::new();
    for (nr, ret) in plain {
        if ret == default {
            continue;
        }
        match runs.last_mut() {
            Some(r) if r.ret == ret && r.hi.checked_add(1) == Some(nr) => r.hi = nr,
            _ => runs.push(Run {
                lo: nr,
                hi: nr,
                ret,
            }),
        }
    }
    a.ld(OFF_NR);
    emit_search(a, &runs, default);
}

/// Syscall numbers lo..=hi that all get `ret`.
#[derive(Clone, Copy)]
struct Run {
    lo: u32,
    hi: u32,
    ret: u32,
}

/// Runs per leaf of the search tree: a leaf is a short chain of range checks.
const LEAF: usize = 6;

/// Binary search over `runs` (sorted, disjoint) with A = nr: the program stays short and the
/// walk logarithmic, which also keeps the kernel's per-syscall action cache cheap to build
/// when the filter is installed.
fn emit_search(a: &mut Asm, runs: &[Run], default: u32) {
    if runs.len() <= LEAF {
        let miss = a.label();
        let mut rets: Vec<(u32, Label)> = Vec::new();
        for r in runs {
            let l = match rets.iter().find(|(ret, _)| *ret == r.ret) {
                Some((_, l)) => *l,
                None => {
                    let l = a.label();
                    rets.push((r.ret, l));
                    l
                }
            };
            // Below this run (and above the previous one): the default.
            a.jmp(JMP_JGE_K, r.lo, Target::Next, Target::To(miss));
            a.jmp(JMP_JGT_K, r.hi, Target::Next, Target::To(l));
        }
        a.here(miss);
        a.ret(default);
        for (ret, l) in rets {
            a.here(l);
            a.ret(ret);
        }
        return;
    }
    let mid = runs.len() / 2;
    let (left, right) = (a.label(), a.label());
    a.jmp(JMP_JGE_K, runs[mid].lo, Target::Next, Target::To(left));
    a.code.push(Ins::Ja(right));
    a.here(left);
    emit_search(a, &runs[..mid], default);
    a.here(right);
    emit_search(a, &runs[mid..], default);
}

fn build(rules: &[Rule], arches: &[Arch], default: u32) -> Asm {
    let mut a = Asm {
        code: Vec::new(),
        labels: 0,
    };
    let has_x32 = arches.contains(&Arch::X32);
    // One entry per audit arch: x86_64 and x32 share AUDIT_ARCH_X86_64.
    let mut entries: Vec<(u32, Label)> = Vec::new();
    let mut sections: Vec<(Arch, Label)> = Vec::new();
    for &arch in arches {
        let arch = if arch == Arch::X32 {
            Arch::X86_64
        } else {
            arch
        };
        // An architecture without a syscall table here is refused like an unlisted one.
        if arch.table().is_none() || sections.iter().any(|(s, _)| *s == arch) {
            continue;
        }
        let l = a.label();
        entries.push((audit_arch(arch), l));
        sections.push((arch, l));
    }
    a.ld(OFF_ARCH);
    for (audit, l) in &entries {
        let skip = a.label();
        a.jmp(JMP_JEQ_K, *audit, Target::Next, Target::To(skip));
        a.code.push(Ins::Ja(*l));
        a.here(skip);
    }
    a.ret(RET_KILL_PROCESS);
    for (arch, l) in sections {
        a.here(l);
        if arch == Arch::X86_64 {
            // x32 calls arrive with the x86_64 audit arch and bit 30 set in the number.
            a.ld(OFF_NR);
            let native = a.label();
            a.jmp(JMP_JGE_K, X32_SYSCALL_BIT, Target::Next, Target::To(native));
            if has_x32 {
                let x32 = a.label();
                a.code.push(Ins::Ja(x32));
                a.here(native);
                emit_arch(&mut a, rules, Arch::X86_64, default);
                a.here(x32);
                emit_arch(&mut a, rules, Arch::X32, default);
            } else {
                a.ret(RET_KILL_PROCESS);
                a.here(native);
                emit_arch(&mut a, rules, Arch::X86_64, default);
            }
        } else {
            emit_arch(&mut a, rules, arch, default);
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::spec;

    /// A classic BPF interpreter for the instructions the compiler emits.
    fn run(prog: &[SockFilter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
        let mut data = Vec::with_capacity(64);
        data.extend_from_slice(&nr.to_le_bytes());
        data.extend_from_slice(&arch.to_le_bytes());
        data.extend_from_slice(&0u64.to_le_bytes());
        for a in args {
            data.extend_from_slice(&a.to_le_bytes());
        }
        let mut acc = 0u32;
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                LD_W_ABS => {
                    let o = i.k as usize;
                    assert!(o % 4 == 0 && o + 4 <= data.len());
                    acc = u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
                }
                ALU_AND_K => acc &= i.k,
                JMP_JA => pc += i.k as usize,
                JMP_JEQ_K | JMP_JGT_K | JMP_JGE_K => {
                    let hit = match i.code {
                        JMP_JEQ_K => acc == i.k,
                        JMP_JGT_K => acc > i.k,
                        _ => acc >= i.k,
                    };
                    pc += if hit { i.jt } else { i.jf } as usize;
                }
                RET_K => return i.k,
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    fn parse(json: &str) -> Seccomp {
        serde_json::from_str(json).unwrap()
    }

    fn nr(arch: Arch, name: &str) -> u32 {
        arch.number(name).unwrap()
    }

    const X64: u32 = AUDIT_ARCH_X86_64;
    const EPERM: u32 = RET_ERRNO | 1;

    #[test]
    fn tables_are_sorted_and_known_numbers() {
        for t in [
            seccomp_tables::X86_64,
            seccomp_tables::X86,
            seccomp_tables::X32,
            seccomp_tables::AARCH64,
        ] {
            assert!(t.windows(2).all(|w| w[0].0 < w[1].0));
        }
        assert_eq!(Arch::X86_64.number("execve"), Some(59));
        assert_eq!(Arch::X86.number("execve"), Some(11));
        assert_eq!(Arch::Aarch64.number("execve"), Some(221));
        assert_eq!(Arch::X32.number("execve"), Some(X32_SYSCALL_BIT + 520));
        assert_eq!(Arch::X86_64.number("clone3"), Some(435));
        assert_eq!(Arch::Aarch64.number("open"), None);
        assert_eq!(Arch::X86_64.number("socketcall"), None);
    }

    #[test]
    fn allowlist_default_errno_and_bad_arch() {
        let s = parse(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86"],
                "syscalls":[{"names":["read","write","no_such_call","socketcall"],"action":"SCMP_ACT_ALLOW"},
                            {"names":["clone3"],"action":"SCMP_ACT_ERRNO","errnoRet":38}]}"#,
        );
        let f = compile_for(&s, Arch::X86_64).unwrap();
        let p = &f.program;
        let a = [0; 6];
        assert_eq!(run(p, 0, X64, a), RET_ALLOW);
        assert_eq!(run(p, 1, X64, a), RET_ALLOW);
        assert_eq!(run(p, 2, X64, a), EPERM);
        assert_eq!(run(p, 435, X64, a), RET_ERRNO | 38);
        // i386: read is 3, socketcall exists there.
        assert_eq!(run(p, 3, AUDIT_ARCH_I386, a), RET_ALLOW);
        assert_eq!(run(p, 102, AUDIT_ARCH_I386, a), RET_ALLOW);
        assert_eq!(run(p, 0, AUDIT_ARCH_I386, a), EPERM);
        // Not listed: x32 numbers and other architectures are killed.
        assert_eq!(run(p, X32_SYSCALL_BIT, X64, a), RET_KILL_PROCESS);
        assert_eq!(run(p, X32_SYSCALL_BIT + 1, X64, a), RET_KILL_PROCESS);
        assert_eq!(run(p, 63, AUDIT_ARCH_AARCH64, a), RET_KILL_PROCESS);
        assert_eq!(f.flags, 0);
    }

    #[test]
    fn x32_when_listed_and_aarch64() {
        let s = parse(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","defaultErrnoRet":null,
                "architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X32","SCMP_ARCH_AARCH64"],
                "syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#,
        );
        let p = compile_for(&s, Arch::X86_64).unwrap().program;
        let a = [0; 6];
        assert_eq!(run(&p, nr(Arch::X86_64, "mkdir"), X64, a), EPERM);
        assert_eq!(run(&p, nr(Arch::X32, "mkdir"), X64, a), EPERM);
        assert_eq!(run(&p, nr(Arch::X32, "read"), X64, a), RET_ALLOW);
        // aarch64 is not compatible with an x86_64 kernel: left out, so refused.
        assert_eq!(run(&p, 34, AUDIT_ARCH_AARCH64, a), RET_KILL_PROCESS);
        let p = compile_for(&s, Arch::Aarch64).unwrap().program;
        assert_eq!(
            run(&p, nr(Arch::Aarch64, "mkdirat"), AUDIT_ARCH_AARCH64, a),
            EPERM
        );
        assert_eq!(run(&p, 63, AUDIT_ARCH_AARCH64, a), RET_ALLOW);
        assert_eq!(run(&p, 83, X64, a), RET_KILL_PROCESS);
    }

    fn one_arg_rule(op: &str, value: u64, value_two: u64) -> Vec<SockFilter> {
        let json = format!(
            r#"{{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86"],
                "syscalls":[{{"names":["personality"],"action":"SCMP_ACT_ALLOW",
                              "args":[{{"index":1,"value":{value},"valueTwo":{value_two},"op":"{op}"}}]}}]}}"#
        );
        compile_for(&parse(&json), Arch::X86_64).unwrap().program
    }

    #[test]
    fn sixty_four_bit_comparisons_check_both_halves() {
        let pers = nr(Arch::X86_64, "personality");
        let v: u64 = 0x1_0000_0005;
        let probes: [u64; 9] = [
            0,
            5,
            6,
            0x1_0000_0004,
            v,
            0x1_0000_0006,
            0x2_0000_0000,
            0x2_0000_0005,
            u64::MAX,
        ];
        type Pred = fn(u64, u64) -> bool;
        let cases: [(&str, Pred); 6] = [
            ("SCMP_CMP_EQ", |x, v| x == v),
            ("SCMP_CMP_NE", |x, v| x != v),
            ("SCMP_CMP_LT", |x, v| x < v),
            ("SCMP_CMP_LE", |x, v| x <= v),
            ("SCMP_CMP_GT", |x, v| x > v),
            ("SCMP_CMP_GE", |x, v| x >= v),
        ];
        for (op, want) in cases {
            let p = one_arg_rule(op, v, 0);
            for x in probes {
                let got = run(&p, pers, X64, [0, x, 0, 0, 0, 0]);
                let expect = if want(x, v) { RET_ALLOW } else { EPERM };
                assert_eq!(got, expect, "{op} {x:#x} vs {v:#x}");
            }
        }
        // MASKED_EQ: (arg & value) == valueTwo, on both halves.
        let p = one_arg_rule(
            "SCMP_CMP_MASKED_EQ",
            0xff00_0000_7e02_0000,
            0x0100_0000_0000_0000,
        );
        let masked = |x: u64| run(&p, pers, X64, [0, x, 0, 0, 0, 0]);
        assert_eq!(masked(0x0100_0000_0000_0011), RET_ALLOW);
        assert_eq!(masked(0x0000_0000_0000_0011), EPERM);
        assert_eq!(masked(0x0100_0000_0002_0000), EPERM);
        assert_eq!(masked(0x01ff_ffff_8000_0000), RET_ALLOW);
        // On i386 only the low half exists.
        let p = one_arg_rule("SCMP_CMP_EQ", 0xffff_ffff, 0);
        let i386 = nr(Arch::X86, "personality");
        assert_eq!(
            run(&p, i386, AUDIT_ARCH_I386, [0, 0xffff_ffff, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            run(&p, i386, AUDIT_ARCH_I386, [0, 0xfffe, 0, 0, 0, 0]),
            EPERM
        );
        assert_eq!(run(&p, pers, X64, [0, 0xffff_ffff, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&p, pers, X64, [0, u64::MAX, 0, 0, 0, 0]), EPERM);
    }

    #[test]
    fn conditional_rules_before_plain_ones_and_anded_args() {
        let s = parse(
            r#"{"defaultAction":"SCMP_ACT_KILL_PROCESS",
                "syscalls":[{"names":["socket"],"action":"SCMP_ACT_ALLOW"},
                            {"names":["socket"],"action":"SCMP_ACT_ERRNO","errnoRet":97,
                             "args":[{"index":0,"value":40,"op":"SCMP_CMP_EQ"}]},
                            {"names":["clone"],"action":"SCMP_ACT_ALLOW",
                             "args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]},
                            {"names":["kill"],"action":"SCMP_ACT_ALLOW",
                             "args":[{"index":0,"value":1,"op":"SCMP_CMP_GE"},{"index":0,"value":10,"op":"SCMP_CMP_LT"},
                                     {"index":1,"value":0,"op":"SCMP_CMP_EQ"}]}]}"#,
        );
        let p = compile_for(&s, Arch::X86_64).unwrap().program;
        let sock = nr(Arch::X86_64, "socket");
        let args = |a0: u64, a1: u64| [a0, a1, 0, 0, 0, 0];
        assert_eq!(run(&p, sock, X64, args(40, 0)), RET_ERRNO | 97);
        assert_eq!(run(&p, sock, X64, args(2, 0)), RET_ALLOW);
        let clone = nr(Arch::X86_64, "clone");
        assert_eq!(run(&p, clone, X64, args(0x11, 0)), RET_ALLOW);
        assert_eq!(run(&p, clone, X64, args(0x1000_0011, 0)), RET_KILL_PROCESS);
        let kill = nr(Arch::X86_64, "kill");
        assert_eq!(run(&p, kill, X64, args(5, 0)), RET_ALLOW);
        assert_eq!(run(&p, kill, X64, args(0, 0)), RET_KILL_PROCESS);
        assert_eq!(run(&p, kill, X64, args(10, 0)), RET_KILL_PROCESS);
        assert_eq!(run(&p, kill, X64, args(5, 9)), RET_KILL_PROCESS);
    }

    #[test]
    fn actions_and_flags() {
        let s = parse(
            r#"{"defaultAction":"SCMP_ACT_TRACE","defaultErrnoRet":5,"flags":["SECCOMP_FILTER_FLAG_LOG","SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
                "syscalls":[{"names":["read"],"action":"SCMP_ACT_LOG"},{"names":["write"],"action":"SCMP_ACT_TRAP"},
                            {"names":["open"],"action":"SCMP_ACT_KILL"},{"names":["close"],"action":"SCMP_ACT_KILL_THREAD"},
                            {"names":["stat"],"action":"SCMP_ACT_ERRNO"}]}"#,
        );
        let f = compile_for(&s, Arch::X86_64).unwrap();
        assert_eq!(f.flags, 6);
        let p = &f.program;
        let a = [0; 6];
        assert_eq!(run(p, 0, X64, a), RET_LOG);
        assert_eq!(run(p, 1, X64, a), RET_TRAP);
        assert_eq!(run(p, 2, X64, a), RET_KILL_THREAD);
        assert_eq!(run(p, 3, X64, a), RET_KILL_THREAD);
        assert_eq!(run(p, 4, X64, a), EPERM);
        assert_eq!(run(p, 5, X64, a), RET_TRACE | 5);
    }

    #[test]
    fn search_tree_maps_every_number() {
        // Every name of the x86_64 table with one of three actions (or the default), by position.
        let mut rules = String::new();
        for (i, (name, _)) in seccomp_tables::X86_64.iter().enumerate() {
            let action = [
                "SCMP_ACT_ALLOW",
                "SCMP_ACT_LOG",
                "SCMP_ACT_ERRNO",
                "SCMP_ACT_TRAP",
            ][i % 4];
            rules.push_str(&format!(
                r#"{{"names":["{name}"],"action":"{action}","errnoRet":7}},"#
            ));
        }
        rules.pop();
        let json = format!(r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{rules}]}}"#);
        let p = compile_for(&parse(&json), Arch::X86_64).unwrap().program;
        let want = [RET_ALLOW, RET_LOG, RET_ERRNO | 7, RET_TRAP];
        for (i, (name, n)) in seccomp_tables::X86_64.iter().enumerate() {
            assert_eq!(run(&p, *n, X64, [0; 6]), want[i % 4], "{name}");
        }
        for n in 0..1000 {
            if !seccomp_tables::X86_64.iter().any(|(_, m)| *m == n) {
                assert_eq!(run(&p, n, X64, [0; 6]), EPERM, "{n}");
            }
        }
    }

    #[test]
    fn large_allowlists_fit() {
        let names: Vec<String> = seccomp_tables::X86
            .iter()
            .map(|(n, _)| format!("{n:?}"))
            .collect();
        let json = format!(
            r#"{{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],
                "syscalls":[{{"names":[{}],"action":"SCMP_ACT_ALLOW"}}]}}"#,
            names.join(",")
        );
        let p = compile_for(&parse(&json), Arch::X86_64).unwrap().program;
        assert!(p.len() < BPF_MAXINSNS, "{}", p.len());
        for (name, n) in seccomp_tables::X86 {
            assert_eq!(run(&p, *n, AUDIT_ARCH_I386, [0; 6]), RET_ALLOW, "{name}");
        }
        assert_eq!(run(&p, 9999, AUDIT_ARCH_I386, [0; 6]), EPERM);
    }

    fn spec_err(linux_seccomp: &str) -> String {
        let cfg = format!(r#"{{"ociVersion":"1.0.2","linux":{{"seccomp":{linux_seccomp}}}}}"#);
        match spec::parse(cfg.as_bytes()) {
            Err(e) => e,
            Ok(s) => match compile(s.linux.unwrap().seccomp.as_ref().unwrap()) {
                Err(Error::Value(m)) => m,
                other => panic!("expected an error, got {other:?}"),
            },
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (r#"{"syscalls":[]}"#, "linux.seccomp"),
            (
                r#"{"defaultAction":"SCMP_ACT_NOPE"}"#,
                "linux.seccomp.defaultAction",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_Z80"]}"#,
                "linux.seccomp.architectures[0]",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_NEW_LISTENER"]}"#,
                "linux.seccomp.flags[0]",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"},{"names":["x"],"action":"ALLOW"}]}"#,
                "linux.seccomp.syscalls[1].action",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":[],"action":"SCMP_ACT_ERRNO"}]}"#,
                "linux.seccomp.syscalls[0].names",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
                "linux.seccomp.syscalls[0].args[0].index",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":1,"op":"EQ"}]}]}"#,
                "linux.seccomp.syscalls[0].args[0].op",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":-1,"op":"SCMP_CMP_EQ"}]}]}"#,
                "linux.seccomp.syscalls[0].args[0].value",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":5000}"#,
                "linux.seccomp.defaultAction",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_NOTIFY"}]}"#,
                "linux.seccomp.syscalls[0].action",
            ),
        ];
        for (json, field) in cases {
            let e = spec_err(json);
            assert!(e.starts_with("config.json: "), "{e}");
            assert!(e.contains(field), "{json}: {e}");
        }
    }
}

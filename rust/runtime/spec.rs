//! The subset of the OCI runtime-spec 1.x `config.json` that the runtime reads. Unknown fields
//! are ignored; `null` is accepted wherever a field may be omitted. Parse errors name the JSON
//! field (`process.user.uid: invalid type: ...`) through serde_path_to_error.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// `null` reads as the default value, like an omitted field.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    pub oci_version: String,
    #[serde(default)]
    pub process: Option<Process>,
    #[serde(default)]
    pub root: Option<Root>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub mounts: Vec<Mount>,
    #[serde(default)]
    pub linux: Option<Linux>,
    #[serde(default, deserialize_with = "null_default")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_default")]
    pub hooks: Hooks,
}

/// `hooks`: commands the runtime runs at points of the container's lifecycle (the runc CLI
/// runs them; `pyrun run` has none).
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Hooks {
    #[serde(default, deserialize_with = "null_default")]
    pub prestart: Vec<Hook>,
    #[serde(default, deserialize_with = "null_default")]
    pub create_runtime: Vec<Hook>,
    #[serde(default, deserialize_with = "null_default")]
    pub create_container: Vec<Hook>,
    #[serde(default, deserialize_with = "null_default")]
    pub start_container: Vec<Hook>,
    #[serde(default, deserialize_with = "null_default")]
    pub poststart: Vec<Hook>,
    #[serde(default, deserialize_with = "null_default")]
    pub poststop: Vec<Hook>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Hook {
    pub path: String,
    #[serde(default, deserialize_with = "null_default")]
    pub args: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub env: Vec<String>,
    #[serde(default)]
    pub timeout: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    #[serde(default, deserialize_with = "null_default")]
    pub terminal: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub user: User,
    #[serde(default, deserialize_with = "null_default")]
    pub args: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub env: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub cwd: String,
    #[serde(default)]
    pub capabilities: Option<Capabilities>,
    #[serde(default, deserialize_with = "null_default")]
    pub rlimits: Vec<Rlimit>,
    #[serde(default, deserialize_with = "null_default")]
    pub no_new_privileges: bool,
    #[serde(default)]
    pub oom_score_adj: Option<i32>,
    #[serde(default)]
    pub console_size: Option<ConsoleSize>,
}

/// process.consoleSize: the terminal's size in characters.
#[derive(Debug, Deserialize)]
pub struct ConsoleSize {
    pub height: u32,
    pub width: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    #[serde(default, deserialize_with = "null_default")]
    pub uid: u32,
    #[serde(default, deserialize_with = "null_default")]
    pub gid: u32,
    #[serde(default)]
    pub umask: Option<u32>,
    #[serde(default, deserialize_with = "null_default")]
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Capabilities {
    #[serde(default, deserialize_with = "null_default")]
    pub bounding: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub effective: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub inheritable: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub permitted: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub ambient: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct Rlimit {
    #[serde(rename = "type")]
    pub kind: String,
    pub hard: u64,
    pub soft: u64,
}

#[derive(Debug, Deserialize)]
pub struct Root {
    pub path: String,
    #[serde(default, deserialize_with = "null_default")]
    pub readonly: bool,
}

#[derive(Debug, Deserialize)]
pub struct Mount {
    pub destination: String,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub options: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Linux {
    #[serde(default, deserialize_with = "null_default")]
    pub namespaces: Vec<Namespace>,
    #[serde(default, deserialize_with = "null_default")]
    pub uid_mappings: Vec<IdMapping>,
    #[serde(default, deserialize_with = "null_default")]
    pub gid_mappings: Vec<IdMapping>,
    #[serde(default, deserialize_with = "null_default")]
    pub masked_paths: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub readonly_paths: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub sysctl: BTreeMap<String, String>,
    #[serde(default)]
    pub rootfs_propagation: Option<String>,
    #[serde(default)]
    pub seccomp: Option<Seccomp>,
    #[serde(default)]
    pub cgroups_path: Option<String>,
    #[serde(default)]
    pub resources: Option<Resources>,
    #[serde(default, deserialize_with = "null_default")]
    pub devices: Vec<Device>,
}

/// `linux.devices`: a device node the runtime creates in the container.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, deserialize_with = "null_default")]
    pub major: i64,
    #[serde(default, deserialize_with = "null_default")]
    pub minor: i64,
    #[serde(default)]
    pub file_mode: Option<u32>,
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub gid: Option<u32>,
}

/// `linux.resources`: the memory, cpu and pids limits (others are ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    #[serde(default)]
    pub memory: Option<MemoryResources>,
    #[serde(default)]
    pub cpu: Option<CpuResources>,
    #[serde(default)]
    pub pids: Option<PidsResources>,
    #[serde(default, deserialize_with = "null_default")]
    pub devices: Vec<DeviceRule>,
}

/// `linux.resources.devices`: a device cgroup rule (v1 devices.allow/deny).
#[derive(Debug, Deserialize)]
pub struct DeviceRule {
    pub allow: bool,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub major: Option<i64>,
    #[serde(default)]
    pub minor: Option<i64>,
    #[serde(default)]
    pub access: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryResources {
    #[serde(default)]
    pub limit: Option<i64>,
    #[serde(default)]
    pub swap: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuResources {
    #[serde(default)]
    pub shares: Option<u64>,
    #[serde(default)]
    pub quota: Option<i64>,
    #[serde(default)]
    pub period: Option<u64>,
    #[serde(default)]
    pub cpus: Option<String>,
    #[serde(default)]
    pub mems: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PidsResources {
    pub limit: i64,
}

/// `linux.seccomp`: compiled to a BPF program by [`super::seccomp`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Seccomp {
    pub default_action: String,
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    #[serde(default, deserialize_with = "null_default")]
    pub architectures: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub flags: Vec<String>,
    #[serde(default)]
    pub listener_path: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub syscalls: Vec<SeccompSyscall>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeccompSyscall {
    pub names: Vec<String>,
    pub action: String,
    #[serde(default)]
    pub errno_ret: Option<u32>,
    #[serde(default, deserialize_with = "null_default")]
    pub args: Vec<SeccompArg>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeccompArg {
    pub index: u32,
    pub value: u64,
    #[serde(default, deserialize_with = "null_default")]
    pub value_two: u64,
    pub op: String,
}

#[derive(Debug, Deserialize)]
pub struct Namespace {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdMapping {
    #[serde(rename = "containerID")]
    pub container_id: u32,
    #[serde(rename = "hostID")]
    pub host_id: u32,
    pub size: u32,
}

/// Parse config.json bytes. The error message starts with the path of the offending field.
pub fn parse(bytes: &[u8]) -> Result<Spec, String> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            format!("config.json: {inner}")
        } else {
            format!("config.json: {path}: {inner}")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_and_nulls() {
        let s = parse(br#"{"ociVersion":"1.0.2","process":{"args":["sh"],"env":null,"user":{"uid":1,"gid":2,"additionalGids":null}},"root":{"path":"rootfs"},"mounts":null,"extra":{"x":1}}"#).unwrap();
        let p = s.process.unwrap();
        assert_eq!(p.args, vec!["sh"]);
        assert!(p.env.is_empty());
        assert_eq!((p.user.uid, p.user.gid), (1, 2));
        assert!(s.mounts.is_empty());
        assert_eq!(s.root.unwrap().path, "rootfs");
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse(br#"{"ociVersion":"1","process":{"user":{"uid":"x"}}}"#).unwrap_err();
        assert!(e.contains("process.user.uid"), "{e}");
        let e = parse(br#"{"ociVersion":"1","mounts":[{"destination":"/a"},{"type":"tmpfs"}]}"#)
            .unwrap_err();
        assert!(e.contains("mounts[1]"), "{e}");
        assert!(e.contains("destination"), "{e}");
        let e = parse(br#"{"process":{}}"#).unwrap_err();
        assert!(e.contains("ociVersion"), "{e}");
        let e = parse(b"{").unwrap_err();
        assert!(e.starts_with("config.json: "), "{e}");
    }
}

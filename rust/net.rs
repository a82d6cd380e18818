//! Container networking on the host: bridges, network namespaces and veth pairs, through
//! rtnetlink messages built here (no netlink library: a handful of message kinds is all the
//! `run` hot path needs, and it costs ~1 ms instead of pyroute2's ~250 ms import).
//!
//! A container's network namespace is made by a short-lived thread that `unshare`s
//! CLONE_NEWNET (a per-thread operation: the rest of the process stays on the host's) and
//! bind-mounts `/proc/thread-self/ns/net` at a path the runtime then joins; a veth pair is
//! created from inside the namespace (its peer is sent to the host's namespace by fd) and the
//! host end is enslaved to the network's bridge through a netlink socket opened on the host.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;

const RTA_GATEWAY: u16 = 5;
const RTA_OIF: u16 = 4;

const IFF_UP: u32 = 0x1;

/// One rtnetlink request under construction: header, fixed part, attributes (nested ones
/// through `begin`/`end`).
struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    fn new(kind: u16, flags: u16) -> Msg {
        let mut buf = vec![0u8; 16];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        Msg {
            buf,
            nests: Vec::new(),
        }
    }

    fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self.pad();
        self
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    /// struct ifinfomsg (16 bytes).
    fn ifinfo(&mut self, index: i32, flags: u32, change: u32) -> &mut Self {
        let mut b = [0u8; 16];
        b[4..8].copy_from_slice(&index.to_ne_bytes());
        b[8..12].copy_from_slice(&flags.to_ne_bytes());
        b[12..16].copy_from_slice(&change.to_ne_bytes());
        self.raw(&b)
    }

    fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        let len = (4 + payload.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
        self
    }

    fn attr_str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(kind, &v)
    }

    fn attr_u32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.attr(kind, &v.to_ne_bytes())
    }

    fn begin(&mut self, kind: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    fn end(&mut self) -> &mut Self {
        let start = self.nests.pop().expect("end without begin");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }
}

/// A NETLINK_ROUTE socket, bound to the network namespace of the thread that opened it.
struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    fn open() -> io::Result<Netlink> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by socket(2) and nothing else owns it.
        Ok(Netlink {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            seq: 0,
        })
    }

    /// Send `msg` and wait for its acknowledgement; the kernel's errno as an io::Error.
    fn request(&mut self, msg: &mut Msg) -> io::Result<()> {
        self.seq += 1;
        let len = msg.buf.len() as u32;
        msg.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        msg.buf[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        // SAFETY: a sockaddr_nl of zeros addresses the kernel; buffers outlive the calls.
        let sent = unsafe {
            let mut sa: libc::sockaddr_nl = std::mem::zeroed();
            sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.buf.as_ptr().cast(),
                msg.buf.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut reply = vec![0u8; 8192];
        loop {
            // SAFETY: reads into a buffer we own, bounded by its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    reply.as_mut_ptr().cast(),
                    reply.len(),
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut off = 0usize;
            let n = n as usize;
            while off + 16 <= n {
                let mlen = u32::from_ne_bytes(reply[off..off + 4].try_into().unwrap()) as usize;
                let kind = u16::from_ne_bytes(reply[off + 4..off + 6].try_into().unwrap());
                let seq = u32::from_ne_bytes(reply[off + 8..off + 12].try_into().unwrap());
                if mlen < 16 || off + mlen > n {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink reply",
                    ));
                }
                if seq == self.seq {
                    if kind == NLMSG_ERROR && mlen >= 20 {
                        let err = i32::from_ne_bytes(reply[off + 16..off + 20].try_into().unwrap());
                        return if err == 0 {
                            Ok(())
                        } else {
                            Err(io::Error::from_raw_os_error(-err))
                        };
                    }
                    if kind == NLMSG_DONE {
                        return Ok(());
                    }
                }
                off += (mlen + 3) & !3;
            }
        }
    }
}

fn ctx(what: String) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn ifindex(name: &str) -> io::Result<i32> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a NUL-terminated name; if_nametoindex only reads it.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(i as i32)
    }
}

fn link_up(nl: &mut Netlink, index: i32) -> io::Result<()> {
    nl.request(Msg::new(RTM_NEWLINK, 0).ifinfo(index, IFF_UP, IFF_UP))
}

fn add_addr(nl: &mut Netlink, index: i32, ip: Ipv4Addr, prefix: u8) -> io::Result<()> {
    let mut m = Msg::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
    let mut hdr = [0u8; 8];
    hdr[0] = libc::AF_INET as u8;
    hdr[1] = prefix;
    hdr[4..8].copy_from_slice(&(index as u32).to_ne_bytes());
    let host_mask = if prefix >= 32 { 0 } else { u32::MAX >> prefix };
    let brd = Ipv4Addr::from(u32::from(ip) | host_mask);
    m.raw(&hdr)
        .attr(IFA_LOCAL, &ip.octets())
        .attr(IFA_ADDRESS, &ip.octets())
        .attr(IFA_BROADCAST, &brd.octets());
    nl.request(&mut m)
}

fn add_default_route(nl: &mut Netlink, index: i32, gateway: Ipv4Addr) -> io::Result<()> {
    let mut m = Msg::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    let hdr = [
        libc::AF_INET as u8,
        0,
        0,
        0,
        libc::RT_TABLE_MAIN,
        libc::RTPROT_BOOT,
        libc::RT_SCOPE_UNIVERSE,
        libc::RTN_UNICAST,
        0,
        0,
        0,
        0,
    ];
    m.raw(&hdr)
        .attr(RTA_GATEWAY, &gateway.octets())
        .attr_u32(RTA_OIF, index as u32);
    nl.request(&mut m)
}

fn parse_cidr(cidr: &str) -> io::Result<(Ipv4Addr, u8)> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{cidr:?} is not an IPv4 address with a prefix length (A.B.C.D/N)"),
        )
    };
    let (ip, prefix) = cidr.split_once('/').ok_or_else(bad)?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    if prefix > 32 {
        return Err(bad());
    }
    Ok((ip, prefix))
}

fn write_sysctl(path: &str, value: &str) -> io::Result<()> {
    std::fs::write(path, value).map_err(ctx(format!("write {path}")))
}

/// Make bridge `name` with address `cidr` (the gateway, e.g. 10.88.0.1/16) and bring it up;
/// what exists already is kept. `route_localnet` lets DNAT of 127.0.0.1 reach the bridge.
pub fn ensure_bridge(name: &str, cidr: &str, mtu: Option<u32>) -> io::Result<()> {
    let (ip, prefix) = parse_cidr(cidr)?;
    let mut nl = Netlink::open()?;
    let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
    m.ifinfo(0, 0, 0).attr_str(IFLA_IFNAME, name);
    if let Some(mtu) = mtu {
        m.attr_u32(IFLA_MTU, mtu);
    }
    m.begin(IFLA_LINKINFO)
        .attr_str(IFLA_INFO_KIND, "bridge")
        .end();
    match nl.request(&mut m) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(ctx(format!("create bridge {name}"))(e)),
    }
    let index = ifindex(name).map_err(ctx(format!("bridge {name}")))?;
    match add_addr(&mut nl, index, ip, prefix) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(ctx(format!("add {cidr} to bridge {name}"))(e)),
    }
    link_up(&mut nl, index).map_err(ctx(format!("bring bridge {name} up")))?;
    write_sysctl(
        &format!("/proc/sys/net/ipv4/conf/{name}/route_localnet"),
        "1",
    )?;
    Ok(())
}

/// Delete link `name` (a bridge, or a veth with its peer); absent is fine.
pub fn delete_link(name: &str) -> io::Result<()> {
    let index = match ifindex(name) {
        Ok(i) => i,
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut nl = Netlink::open()?;
    match nl.request(Msg::new(RTM_DELLINK, 0).ifinfo(index, 0, 0)) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(ctx(format!("delete link {name}"))(e)),
    }
}

/// Whether `path` is a mount point (its device differs from its parent's, or it is an nsfs
/// file bind-mounted there).
fn is_mounted(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    let parent = path.parent().and_then(|p| std::fs::metadata(p).ok());
    use std::os::unix::fs::MetadataExt;
    !matches!(parent, Some(p) if p.dev() == meta.dev())
}

/// Make `dir` a shared mount point of its own (as iproute2 does for /run/netns), so unmounting
/// a namespace file there also unmounts the copies that later mount namespaces were given.
fn ensure_shared_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir).map_err(ctx(format!("create {}", dir.display())))?;
    let c = CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mounted_on_itself = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| {
            let want = dir.to_string_lossy();
            m.lines()
                .any(|l| l.split(' ').nth(4) == Some(want.as_ref()))
        })
        .unwrap_or(false);
    // SAFETY: mount(2) with NUL-terminated paths we own.
    unsafe {
        if !mounted_on_itself
            && libc::mount(
                c.as_ptr(),
                c.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ) != 0
        {
            return Err(ctx(format!("bind {}", dir.display()))(
                io::Error::last_os_error(),
            ));
        }
        if libc::mount(
            std::ptr::null(),
            c.as_ptr(),
            std::ptr::null(),
            libc::MS_SHARED | libc::MS_REC,
            std::ptr::null(),
        ) != 0
        {
            return Err(ctx(format!("make {} shared", dir.display()))(
                io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// Run `f` on a fresh thread (whose network namespace it may change without touching the
/// caller's) and return its result.
fn on_thread<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    std::thread::spawn(f)
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("network setup thread panicked")))
}

/// Create a network namespace with its loopback up and bind-mount it at `path` (a file in a
/// directory made a shared mount point on first use). An existing namespace there is kept.
pub fn create_netns(path: &Path) -> io::Result<()> {
    if is_mounted(path) {
        return Ok(());
    }
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    ensure_shared_dir(dir)?;
    drop(
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(ctx(format!("create {}", path.display())))?,
    );
    let target = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    on_thread(move || {
        // SAFETY: unshare/mount with arguments we own; only this thread's netns changes.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNET) != 0 {
                return Err(ctx("unshare the network namespace".into())(
                    io::Error::last_os_error(),
                ));
            }
            let src = c"/proc/thread-self/ns/net";
            if libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ) != 0
            {
                return Err(ctx("bind-mount the network namespace".into())(
                    io::Error::last_os_error(),
                ));
            }
        }
        let mut nl = Netlink::open()?;
        link_up(&mut nl, 1).map_err(ctx("bring lo up".into()))
    })
}

/// Unmount and remove a namespace file made by `create_netns`; absent is fine.
pub fn delete_netns(path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: umount2 of a path we own the string of.
    let r = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if r != 0 {
        let e = io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) {
            return Err(ctx(format!("unmount {}", path.display()))(e));
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ctx(format!("remove {}", path.display()))(e)),
    }
}

/// What `attach_veth` sets up.
pub struct Veth<'a> {
    /// The network namespace file (from `create_netns`, or /proc/PID/ns/net).
    pub netns: &'a Path,
    /// Interface name inside the namespace (eth0, eth1, ...).
    pub inner: &'a str,
    /// Host-side name (veth…, at most 15 bytes).
    pub host: &'a str,
    /// The bridge the host side joins.
    pub bridge: &'a str,
    /// The container's address with prefix, e.g. 10.88.0.5/16.
    pub cidr: &'a str,
    /// Default route through this gateway when given.
    pub gateway: Option<Ipv4Addr>,
    /// MAC address of the inner side.
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
}

/// Create a veth pair: `inner` inside the namespace with its address, up, and (with a
/// gateway) the default route; `host` on the host, enslaved to the bridge and up. On failure
/// nothing is left behind (the pair is deleted).
pub fn attach_veth(v: &Veth<'_>) -> io::Result<()> {
    let (ip, prefix) = parse_cidr(v.cidr)?;
    let bridge = ifindex(v.bridge).map_err(ctx(format!("bridge {}", v.bridge)))?;
    let ns = File::open(v.netns).map_err(ctx(format!("open {}", v.netns.display())))?;
    let host_ns =
        File::open("/proc/thread-self/ns/net").map_err(ctx("open the host netns".into()))?;
    let mut host_nl = Netlink::open()?;
    let (inner, host, gateway, mac, mtu) = (
        v.inner.to_string(),
        v.host.to_string(),
        v.gateway,
        v.mac,
        v.mtu,
    );
    let made = on_thread(move || {
        // SAFETY: setns to a namespace fd we hold; only this thread moves.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(ctx("enter the container's network namespace".into())(
                io::Error::last_os_error(),
            ));
        }
        let mut nl = Netlink::open()?;
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
        m.ifinfo(0, 0, 0).attr_str(IFLA_IFNAME, &inner);
        if let Some(mac) = mac {
            m.attr(IFLA_ADDRESS, &mac);
        }
        if let Some(mtu) = mtu {
            m.attr_u32(IFLA_MTU, mtu);
        }
        m.begin(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "veth")
            .begin(IFLA_INFO_DATA)
            .begin(VETH_INFO_PEER)
            .ifinfo(0, 0, 0)
            .attr_str(IFLA_IFNAME, &host)
            .attr_u32(IFLA_NET_NS_FD, host_ns.as_raw_fd() as u32);
        if let Some(mtu) = mtu {
            m.attr_u32(IFLA_MTU, mtu);
        }
        m.end().end().end();
        nl.request(&mut m)
            .map_err(ctx(format!("create veth pair {inner}/{host}")))?;
        let set_up = |nl: &mut Netlink| -> io::Result<()> {
            let index = ifindex(&inner)?;
            add_addr(nl, index, ip, prefix).map_err(ctx(format!("address {inner}")))?;
            link_up(nl, index).map_err(ctx(format!("bring {inner} up")))?;
            if let Some(gw) = gateway {
                add_default_route(nl, index, gw).map_err(ctx("add the default route".into()))?;
            }
            Ok(())
        };
        if let Err(e) = set_up(&mut nl) {
            if let Ok(index) = ifindex(&inner) {
                let _ = nl.request(Msg::new(RTM_DELLINK, 0).ifinfo(index, 0, 0));
            }
            return Err(e);
        }
        Ok(())
    });
    made?;
    let enslave = (|| -> io::Result<()> {
        let index = ifindex(v.host).map_err(ctx(format!("veth {}", v.host)))?;
        let mut m = Msg::new(RTM_NEWLINK, 0);
        m.ifinfo(index, IFF_UP, IFF_UP)
            .attr_u32(IFLA_MASTER, bridge as u32);
        host_nl
            .request(&mut m)
            .map_err(ctx(format!("attach {} to {}", v.host, v.bridge)))
    })();
    if let Err(e) = enslave {
        let _ = delete_link(v.host);
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_aligned_and_nested_lengths_cover_children() {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE);
        m.ifinfo(0, 0, 0)
            .attr_str(IFLA_IFNAME, "abc")
            .begin(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "veth")
            .end();
        assert_eq!(m.buf.len() % 4, 0);
        // header 16 + ifinfomsg 16 + "abc\0" attr 8, then the nest at 40.
        let nest_len = u16::from_ne_bytes([m.buf[40], m.buf[41]]) as usize;
        assert_eq!(nest_len, m.buf.len() - 40);
        let kind = u16::from_ne_bytes([m.buf[42], m.buf[43]]);
        assert_eq!(kind, IFLA_LINKINFO | NLA_F_NESTED);
    }

    #[test]
    fn cidr_parsing() {
        assert_eq!(
            parse_cidr("10.88.0.5/16").unwrap(),
            ("10.88.0.5".parse().unwrap(), 16)
        );
        assert!(parse_cidr("10.88.0.5").is_err());
        assert!(parse_cidr("10.88.0.5/33").is_err());
        assert!(parse_cidr("x/8").is_err());
    }
}

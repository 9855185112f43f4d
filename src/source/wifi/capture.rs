//! Live capture without libpcap: an `AF_PACKET` raw socket bound to the monitor interface,
//! nonblocking and driven by tokio's `AsyncFd`, with an optional classic-BPF filter in the
//! kernel so only probe requests are copied to user space.
//!
//! The link type normally comes from the interface's ARPHRD type (803 radiotap → 127, 801 bare
//! 802.11 → 105; anything else means the interface is not in monitor mode). [`LinkMode::Force`]
//! is the seam that lets tests run the socket path on `lo` or a veth pair.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use tokio::io::unix::AsyncFd;

use super::frame::{LINKTYPE_IEEE802_11, LINKTYPE_RADIOTAP};

/// `ARPHRD_IEEE80211`: 802.11 frames without a radio header.
const ARPHRD_IEEE80211: u16 = 801;
/// `ARPHRD_IEEE80211_RADIOTAP`: monitor mode with radiotap.
const ARPHRD_IEEE80211_RADIOTAP: u16 = 803;
/// `SO_ATTACH_FILTER` (the same value on every Linux architecture storegw targets).
const SO_ATTACH_FILTER: libc::c_int = 26;
/// `sll_pkttype` of frames this host sent (seen on `lo`, or when injecting).
const PACKET_OUTGOING: u8 = 4;
/// `PACKET_STATISTICS` socket option (`SOL_PACKET`).
const PACKET_STATISTICS: libc::c_int = 6;
const ETH_P_ALL_BE: u16 = (libc::ETH_P_ALL as u16).to_be();

/// How the link type of the captured frames is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    /// From the interface's ARPHRD type; refuses interfaces not in monitor mode.
    FromDevice,
    /// Treat every frame as this link type, whatever the interface is (tests on `lo`/veth).
    Force(u16),
}

/// Why capture could not start or stopped.
#[derive(Debug)]
pub enum CaptureError {
    /// No interface of that name.
    NoSuchInterface(String),
    /// The interface exists but delivers no 802.11 frames.
    NotMonitor {
        /// The interface name, as in `sources.wifi.interface`.
        iface: String,
        /// Its ARPHRD type (`/sys/class/net/IFACE/type`); capture needs 803 (radiotap) or 801.
        arphrd: u16,
    },
    /// `socket(AF_PACKET)` was refused: the process lacks CAP_NET_RAW.
    NoPermission(io::Error),
    /// Any other system call failure.
    Io(&'static str, io::Error),
}

impl std::fmt::Display for CaptureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CaptureError::NoSuchInterface(i) => write!(
                f,
                "wifi interface `{i}` does not exist (check sources.wifi.interface and `iw dev`)"
            ),
            CaptureError::NotMonitor { iface, arphrd } => write!(
                f,
                "wifi interface `{iface}` is not in monitor mode (link type {arphrd}, expected 803 \
                 radiotap): `ip link set {iface} down; iw dev {iface} set type monitor; ip link set {iface} up`"
            ),
            CaptureError::NoPermission(e) => write!(
                f,
                "cannot open a raw packet socket ({e}): storegw needs CAP_NET_RAW for Wi-Fi \
                 capture (under systemd: the wifi-capture.conf drop-in, docs/operations.md §5)"
            ),
            CaptureError::Io(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

impl std::error::Error for CaptureError {}

/// One frame read from the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes stored in the buffer.
    pub len: usize,
    /// The frame was longer than the buffer (its tail, including any FCS, is missing).
    pub cut: bool,
}

/// The open capture socket.
pub struct Capture {
    fd: AsyncFd<OwnedFd>,
    /// Link type of every frame this socket returns.
    pub linktype: u16,
    /// The interface name, for messages.
    pub iface: String,
}

/// Index and ARPHRD type of an interface.
fn interface(name: &str) -> Result<(i32, u16), CaptureError> {
    let c = CString::new(name).map_err(|_| CaptureError::NoSuchInterface(name.into()))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(CaptureError::NoSuchInterface(name.into()));
    }
    let ty = std::fs::read_to_string(format!("/sys/class/net/{name}/type"))
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok())
        .ok_or_else(|| {
            CaptureError::Io(
                "reading the interface type",
                io::Error::other(format!("/sys/class/net/{name}/type unreadable")),
            )
        })?;
    Ok((idx as i32, ty))
}

/// Classic BPF accepting only probe requests (frame control byte 0 == 0x40: version 0,
/// management, subtype 4). For radiotap the 802.11 header starts at the radiotap length,
/// read at run time from the little-endian field at offset 2.
pub fn probe_filter(linktype: u16) -> Vec<libc::sock_filter> {
    const LD_B_ABS: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
    const LD_B_IND: u16 = 0x50; // BPF_LD | BPF_B | BPF_IND
    const LSH_K: u16 = 0x64; // BPF_ALU | BPF_LSH | BPF_K
    const OR_X: u16 = 0x4c; // BPF_ALU | BPF_OR | BPF_X
    const TAX: u16 = 0x07; // BPF_MISC | BPF_TAX
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    let ins = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let mut p = Vec::new();
    if linktype == LINKTYPE_RADIOTAP {
        p.push(ins(LD_B_ABS, 0, 0, 3)); // A = high byte of it_len
        p.push(ins(LSH_K, 0, 0, 8));
        p.push(ins(TAX, 0, 0, 0));
        p.push(ins(LD_B_ABS, 0, 0, 2)); // A = low byte
        p.push(ins(OR_X, 0, 0, 0)); // A = it_len
        p.push(ins(TAX, 0, 0, 0)); // X = it_len
        p.push(ins(LD_B_IND, 0, 0, 0)); // A = frame control byte 0
    } else {
        p.push(ins(LD_B_ABS, 0, 0, 0));
    }
    p.push(ins(JEQ_K, 0, 1, 0x40));
    p.push(ins(RET_K, 0, 0, 0x0004_0000)); // keep the whole frame
    p.push(ins(RET_K, 0, 0, 0)); // drop
    p
}

fn last_err(what: &'static str) -> CaptureError {
    CaptureError::Io(what, io::Error::last_os_error())
}

fn set_nonblocking(fd: RawFd) -> Result<(), CaptureError> {
    // SAFETY: fcntl on a descriptor we own; no pointers involved.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(last_err("fcntl(O_NONBLOCK)"));
    }
    Ok(())
}

/// An `AF_PACKET` raw socket bound to `ifindex` receiving every protocol. The filter (if any)
/// is attached before the bind, so no unfiltered frame is ever queued.
fn packet_socket(
    ifindex: i32,
    filter: Option<&[libc::sock_filter]>,
) -> Result<OwnedFd, CaptureError> {
    // Protocol 0: receive nothing until bound.
    // SAFETY: plain system call with constant arguments.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => CaptureError::NoPermission(e),
            _ => CaptureError::Io("socket(AF_PACKET)", e),
        });
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    if let Some(f) = filter {
        let prog = libc::sock_fprog {
            len: f.len() as u16,
            filter: f.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `prog` points at `f`, alive for the call; the kernel copies the program.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_ATTACH_FILTER,
                &prog as *const libc::sock_fprog as *const libc::c_void,
                std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(last_err("setsockopt(SO_ATTACH_FILTER)"));
        }
    }
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = ETH_P_ALL_BE;
    sll.sll_ifindex = ifindex;
    // SAFETY: `sll` is a valid sockaddr_ll and its size is passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENODEV) => CaptureError::NoSuchInterface(format!("ifindex {ifindex}")),
            _ => CaptureError::Io("bind(AF_PACKET)", e),
        });
    }
    set_nonblocking(fd.as_raw_fd())?;
    Ok(fd)
}

impl Capture {
    /// Opens capture on `iface`. Must be called inside a tokio runtime.
    pub fn open(iface: &str, mode: LinkMode, bpf: bool) -> Result<Capture, CaptureError> {
        let (idx, arphrd) = interface(iface)?;
        let linktype = match mode {
            LinkMode::Force(lt) => lt,
            LinkMode::FromDevice => match arphrd {
                ARPHRD_IEEE80211_RADIOTAP => LINKTYPE_RADIOTAP,
                ARPHRD_IEEE80211 => LINKTYPE_IEEE802_11,
                other => {
                    return Err(CaptureError::NotMonitor {
                        iface: iface.into(),
                        arphrd: other,
                    })
                }
            },
        };
        let prog = bpf.then(|| probe_filter(linktype));
        let fd = packet_socket(idx, prog.as_deref())?;
        // SAFETY: `fd` is an open descriptor owned by the AsyncFd for its whole life, and an
        // OwnedFd always returns the same raw descriptor.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| CaptureError::Io("registering with tokio", e.into_parts().1))?;
        Ok(Capture {
            fd,
            linktype,
            iface: iface.into(),
        })
    }

    /// Waits for the next frame from the interface (frames this host sent are skipped).
    pub async fn recv(&self, buf: &mut [u8]) -> Result<Received, CaptureError> {
        loop {
            let mut guard = self
                .fd
                .readable()
                .await
                .map_err(|e| CaptureError::Io("waiting for frames", e))?;
            match guard.try_io(|fd| recv_one(fd.as_raw_fd(), buf)) {
                Ok(Ok(Some(r))) => return Ok(r),
                Ok(Ok(None)) => continue,
                Ok(Err(e)) => return Err(CaptureError::Io("recvfrom(AF_PACKET)", e)),
                Err(_would_block) => continue,
            }
        }
    }

    /// Frames the kernel dropped because the socket queue was full, since the last call
    /// (`PACKET_STATISTICS` resets on read).
    pub fn kernel_drops(&self) -> u64 {
        // struct tpacket_stats { unsigned int tp_packets; unsigned int tp_drops; }
        let mut st = [0u32; 2];
        let mut len = std::mem::size_of_val(&st) as libc::socklen_t;
        // SAFETY: `st` is valid for writes of `len` bytes, which the kernel never exceeds.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_STATISTICS,
                st.as_mut_ptr() as *mut libc::c_void,
                &mut len,
            )
        };
        if rc < 0 {
            0
        } else {
            st[1] as u64
        }
    }

    /// Reads one more frame if one is already queued (drains bursts without re-polling).
    pub fn try_recv(&self, buf: &mut [u8]) -> Result<Option<Received>, CaptureError> {
        loop {
            match recv_one(self.fd.as_raw_fd(), buf) {
                Ok(Some(r)) => return Ok(Some(r)),
                Ok(None) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(CaptureError::Io("recvfrom(AF_PACKET)", e)),
            }
        }
    }
}

/// One `recvfrom`; `Ok(None)` for a frame this host sent.
fn recv_one(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<Received>> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut flen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `buf` and `from` are valid for writes of the lengths passed.
    let n = unsafe {
        libc::recvfrom(
            fd,
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            libc::MSG_TRUNC | libc::MSG_DONTWAIT,
            &mut from as *mut libc::sockaddr_ll as *mut libc::sockaddr,
            &mut flen,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if from.sll_pkttype == PACKET_OUTGOING {
        return Ok(None);
    }
    let n = n as usize;
    Ok(Some(Received {
        len: n.min(buf.len()),
        cut: n > buf.len(),
    }))
}

/// A raw socket for sending frames on an interface (tests inject with it).
pub struct Injector {
    fd: OwnedFd,
    ifindex: i32,
}

impl Injector {
    /// Opens a sending socket on `iface` (needs CAP_NET_RAW).
    pub fn open(iface: &str) -> Result<Injector, CaptureError> {
        let (ifindex, _) = interface(iface)?;
        let fd = packet_socket(ifindex, Some(&reject_all()))?;
        Ok(Injector { fd, ifindex })
    }

    /// Sends `frame` exactly as given.
    pub fn send(&self, frame: &[u8]) -> Result<(), CaptureError> {
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL_BE;
        sll.sll_ifindex = self.ifindex;
        sll.sll_halen = 6;
        // SAFETY: `frame` and `sll` are valid for reads of the lengths passed.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(last_err("sendto(AF_PACKET)"));
        }
        Ok(())
    }
}

/// A filter that receives nothing (for send-only sockets).
fn reject_all() -> Vec<libc::sock_filter> {
    vec![libc::sock_filter {
        code: 0x06,
        jt: 0,
        jf: 0,
        k: 0,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the classic BPF program the way the kernel does, for the instructions it uses.
    fn run(prog: &[libc::sock_filter], pkt: &[u8]) -> u32 {
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        while let Some(i) = prog.get(pc) {
            pc += 1;
            match i.code {
                0x30 => match pkt.get(i.k as usize) {
                    Some(&b) => a = b as u32,
                    None => return 0,
                },
                0x50 => match pkt.get((x + i.k) as usize) {
                    Some(&b) => a = b as u32,
                    None => return 0,
                },
                0x64 => a <<= i.k,
                0x4c => a |= x,
                0x07 => x = a,
                0x15 => pc += if a == i.k { i.jt } else { i.jf } as usize,
                0x06 => return i.k,
                _ => panic!("unexpected opcode {:#x}", i.code),
            }
        }
        0
    }

    #[test]
    fn filter_passes_only_probe_requests() {
        let f = probe_filter(LINKTYPE_RADIOTAP);
        // 300-byte radiotap header: the length's high byte matters.
        let mut pkt = vec![0u8; 300];
        pkt[2] = (300 & 0xff) as u8;
        pkt[3] = (300 >> 8) as u8;
        pkt.extend([0x40, 0, 0, 0]);
        assert!(run(&f, &pkt) > 0);
        pkt[300] = 0x80; // beacon
        assert_eq!(run(&f, &pkt), 0);
        pkt[300] = 0x50; // probe response
        assert_eq!(run(&f, &pkt), 0);
        assert_eq!(run(&f, &pkt[..10]), 0);
        let f = probe_filter(LINKTYPE_IEEE802_11);
        assert!(run(&f, &[0x40, 0]) > 0);
        assert_eq!(run(&f, &[0x41, 0]), 0);
    }

    #[test]
    fn missing_interface_is_named() {
        let e = interface("nosuchif0").err().map(|e| e.to_string());
        assert!(e.is_some_and(|m| m.contains("`nosuchif0` does not exist")));
    }
}

//! The RTP port allocator over `[media] min_port..=max_port` (issue 4, item 2).
//!
//! Owns: which ports of the range this process has handed out, and binding the UDP sockets on
//! them. A [`PortLease`] holds the bound sockets and gives its ports back when dropped, so a
//! call that ends — however it ends — frees its ports. Exhaustion is
//! [`PortsError::PortsExhausted`], which the call layer answers with SIP 503 / Jingle
//! `general-error`; nothing here panics. Ports another process holds are skipped: binding is
//! the test of freedom, not our own bookkeeping.
//!
//! Allocation walks the range round-robin from where the last one stopped, so a port freed by a
//! call that just ended is the last to be reused and stray packets for the old call (RFC 3550
//! §8.2's concern about late packets) are unlikely to reach a new one.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, MutexGuard};

use thiserror::Error;

/// Why no ports could be had.
#[derive(Debug, Error)]
pub enum PortsError {
    #[error("every RTP port in {min}..={max} is in use")]
    PortsExhausted { min: u16, max: u16 },
    #[error("media port range {min}..={max} is empty or holds no even/odd pair")]
    InvalidRange { min: u16, max: u16 },
    /// Binding failed for a reason other than the port being taken (e.g. the IP is not local):
    /// trying other ports would not help.
    #[error("cannot bind UDP on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// Whether a leg needs an RTCP port of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortMode {
    /// RTP on an even port, RTCP on the next odd one (RFC 3550 §11, RFC 4566 §5.14).
    Pair,
    /// One port carrying RTP and RTCP (rtcp-mux, RFC 5761); any port of the range.
    Mux,
}

#[derive(Debug)]
struct State {
    min: u16,
    max: u16,
    /// Next port to try (round-robin cursor).
    cursor: u16,
    in_use: HashSet<u16>,
}

/// Shared, cloneable handle on the range; cheap to clone into each call.
#[derive(Debug, Clone)]
pub struct PortAllocator {
    state: Arc<Mutex<State>>,
}

/// Bound sockets of one leg. Dropping it (or the [`PortGuard`] taken out of it) returns the
/// ports to the allocator.
#[derive(Debug)]
pub struct PortLease {
    pub rtp: UdpSocket,
    /// `None` in [`PortMode::Mux`].
    pub rtcp: Option<UdpSocket>,
    pub guard: PortGuard,
}

impl PortLease {
    /// The RTP port (for `m=` / Jingle candidates).
    pub fn rtp_port(&self) -> u16 {
        self.guard.rtp
    }
    /// The RTCP port, if a separate one was bound.
    pub fn rtcp_port(&self) -> Option<u16> {
        self.guard.rtcp
    }

    /// The same sockets as tokio sockets for the leg's driver task (call inside a runtime).
    pub fn into_tokio(self) -> io::Result<TokioPortLease> {
        let to_tokio = |socket: UdpSocket| {
            socket.set_nonblocking(true)?;
            tokio::net::UdpSocket::from_std(socket)
        };
        Ok(TokioPortLease {
            rtp: to_tokio(self.rtp)?,
            rtcp: self.rtcp.map(to_tokio).transpose()?,
            guard: self.guard,
        })
    }
}

/// A [`PortLease`] whose sockets were handed to tokio; the guard still frees the ports on drop.
#[derive(Debug)]
pub struct TokioPortLease {
    pub rtp: tokio::net::UdpSocket,
    pub rtcp: Option<tokio::net::UdpSocket>,
    pub guard: PortGuard,
}

/// Gives the ports back to the allocator on drop. Keep it alive as long as the sockets: if the
/// sockets outlive it, the allocator may hand the ports out again, but binding them then fails
/// and they are skipped, so the worst case is a port counted as free that is not.
#[derive(Debug)]
pub struct PortGuard {
    state: Arc<Mutex<State>>,
    rtp: u16,
    rtcp: Option<u16>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // No code path panics while holding the lock, so poisoning cannot leave the set half
    // updated; recover rather than propagate a panic into every call.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Drop for PortGuard {
    fn drop(&mut self) {
        let mut state = lock(&self.state);
        state.in_use.remove(&self.rtp);
        if let Some(rtcp) = self.rtcp {
            state.in_use.remove(&rtcp);
        }
    }
}

/// Is this bind error "someone has that port" (skip it) rather than "this can never work"?
fn port_taken(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied
    )
}

impl PortAllocator {
    /// `min..=max` from `[media]`; the config layer has already checked `min <= max`.
    pub fn new(min: u16, max: u16) -> Result<Self, PortsError> {
        if min == 0 || min > max {
            return Err(PortsError::InvalidRange { min, max });
        }
        Ok(Self {
            state: Arc::new(Mutex::new(State {
                min,
                max,
                cursor: min,
                in_use: HashSet::new(),
            })),
        })
    }

    /// The configured range.
    pub fn range(&self) -> (u16, u16) {
        let s = lock(&self.state);
        (s.min, s.max)
    }

    /// Ports currently handed out by this allocator.
    pub fn in_use(&self) -> usize {
        lock(&self.state).in_use.len()
    }

    /// Binds the sockets of one leg on `ip`: an even/odd pair or a single (rtcp-mux) port.
    /// The sockets are blocking std sockets; the driver turns them into tokio ones with
    /// `set_nonblocking(true)` and `tokio::net::UdpSocket::from_std`.
    pub fn allocate(&self, ip: IpAddr, mode: PortMode) -> Result<PortLease, PortsError> {
        let mut state = lock(&self.state);
        let (min, max) = (state.min, state.max);
        let (first, step) = match mode {
            // First even port >= min that has its odd partner within the range.
            PortMode::Pair => {
                let first = min + (min % 2);
                if first >= max {
                    return Err(PortsError::InvalidRange { min, max });
                }
                (first, 2)
            }
            PortMode::Mux => (min, 1),
        };
        let last = match mode {
            PortMode::Pair => max - 1,
            PortMode::Mux => max,
        };
        let candidates = u32::from(last - first) / step + 1;
        // Start at the cursor, aligned to the mode's grid.
        let mut offset = (u32::from(state.cursor.clamp(first, last) - first) / step) % candidates;
        for _ in 0..candidates {
            let port = first + (offset * step) as u16;
            offset = (offset + 1) % candidates;
            let rtcp_port = (mode == PortMode::Pair).then_some(port + 1);
            if state.in_use.contains(&port) || rtcp_port.is_some_and(|p| state.in_use.contains(&p))
            {
                continue;
            }
            let rtp = match bind(ip, port)? {
                Some(socket) => socket,
                None => continue,
            };
            let rtcp = match rtcp_port {
                Some(p) => match bind(ip, p)? {
                    Some(socket) => Some(socket),
                    None => continue, // `rtp` is dropped, its port released
                },
                None => None,
            };
            state.in_use.insert(port);
            if let Some(p) = rtcp_port {
                state.in_use.insert(p);
            }
            // Invariant: `offset < candidates`, so this is a port of the range.
            state.cursor = first + (offset * step) as u16;
            return Ok(PortLease {
                rtp,
                rtcp,
                guard: PortGuard {
                    state: Arc::clone(&self.state),
                    rtp: port,
                    rtcp: rtcp_port,
                },
            });
        }
        Err(PortsError::PortsExhausted { min, max })
    }
}

/// `Ok(None)`: the port is taken by someone else.
fn bind(ip: IpAddr, port: u16) -> Result<Option<UdpSocket>, PortsError> {
    let addr = SocketAddr::new(ip, port);
    match UdpSocket::bind(addr) {
        Ok(socket) => Ok(Some(socket)),
        Err(e) if port_taken(&e) => Ok(None),
        Err(source) => Err(PortsError::Bind { addr, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// Finds `len` consecutive free UDP ports on 127.0.0.1 (starting even), chosen at run time
    /// from a pseudo-random point so parallel test runs rarely meet.
    fn free_range(len: u16) -> (u16, u16) {
        let seed = std::process::id() ^ rand::random::<u32>();
        for attempt in 0..200u32 {
            let base = 20_000 + ((seed.wrapping_add(attempt * 7919) % 20_000) as u16 & !1);
            let held: Vec<_> = (base..base + len)
                .map_while(|p| UdpSocket::bind((Ipv4Addr::LOCALHOST, p)).ok())
                .collect();
            if held.len() == usize::from(len) {
                return (base, base + len - 1);
            }
        }
        panic!("no free port range on 127.0.0.1");
    }

    #[test]
    fn allocates_pairs_until_exhausted_and_frees_on_drop() {
        let (min, max) = free_range(8);
        let alloc = PortAllocator::new(min, max).unwrap();
        let mut leases = Vec::new();
        loop {
            match alloc.allocate(LOCALHOST, PortMode::Pair) {
                Ok(lease) => leases.push(lease),
                Err(PortsError::PortsExhausted { min: a, max: b }) => {
                    assert_eq!((a, b), (min, max));
                    break;
                }
                Err(e) => panic!("{e}"),
            }
            assert!(leases.len() <= 4, "more pairs than the range holds");
        }
        assert_eq!(leases.len(), 4);
        for l in &leases {
            assert_eq!(l.rtp_port() % 2, 0);
            assert_eq!(l.rtcp_port(), Some(l.rtp_port() + 1));
            assert_eq!(l.rtp.local_addr().unwrap().port(), l.rtp_port());
        }
        assert_eq!(alloc.in_use(), 8);
        drop(leases);
        assert_eq!(alloc.in_use(), 0);
        // All free again: the whole range can be allocated once more.
        let again: Vec<_> = (0..8)
            .map(|_| alloc.allocate(LOCALHOST, PortMode::Mux).unwrap())
            .collect();
        assert!(again.iter().all(|l| l.rtcp.is_none()));
        assert!(matches!(
            alloc.allocate(LOCALHOST, PortMode::Mux),
            Err(PortsError::PortsExhausted { .. })
        ));
    }

    #[test]
    fn skips_ports_another_process_holds() {
        let (min, max) = free_range(4);
        // Someone else holds the first RTCP port: the first pair is unusable.
        let squatter = UdpSocket::bind((Ipv4Addr::LOCALHOST, min + 1)).unwrap();
        let alloc = PortAllocator::new(min, max).unwrap();
        let lease = alloc.allocate(LOCALHOST, PortMode::Pair).unwrap();
        assert_eq!(lease.rtp_port(), min + 2);
        assert!(matches!(
            alloc.allocate(LOCALHOST, PortMode::Pair),
            Err(PortsError::PortsExhausted { .. })
        ));
        // The skipped even port was not leaked by the failed pair attempt.
        let single = alloc.allocate(LOCALHOST, PortMode::Mux).unwrap();
        assert_eq!(single.rtp_port(), min);
        drop(squatter);
    }

    #[test]
    fn concurrent_allocation_hands_out_each_port_once() {
        let (min, max) = free_range(16);
        let alloc = PortAllocator::new(min, max).unwrap();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let alloc = alloc.clone();
                std::thread::spawn(move || {
                    let mut mine = Vec::new();
                    while let Ok(l) = alloc.allocate(LOCALHOST, PortMode::Mux) {
                        mine.push(l);
                    }
                    mine
                })
            })
            .collect();
        let leases: Vec<PortLease> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let mut ports: Vec<u16> = leases.iter().map(PortLease::rtp_port).collect();
        ports.sort_unstable();
        assert_eq!(ports, (min..=max).collect::<Vec<_>>());
        drop(leases);
        assert_eq!(alloc.in_use(), 0);
    }

    #[tokio::test]
    async fn tokio_sockets_carry_the_lease() {
        let (min, max) = free_range(2);
        let alloc = PortAllocator::new(min, max).unwrap();
        let lease = alloc
            .allocate(LOCALHOST, PortMode::Pair)
            .unwrap()
            .into_tokio()
            .unwrap();
        let rtcp = lease.rtcp.as_ref().unwrap();
        rtcp.send_to(b"ping", lease.rtp.local_addr().unwrap())
            .await
            .unwrap();
        let mut buf = [0u8; 8];
        let (n, from) = lease.rtp.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from.port()), (&b"ping"[..], min + 1));
        assert_eq!(alloc.in_use(), 2);
        drop(lease);
        assert_eq!(alloc.in_use(), 0);
    }

    #[test]
    fn bad_ranges_and_addresses_are_typed_errors() {
        assert!(matches!(
            PortAllocator::new(10, 9),
            Err(PortsError::InvalidRange { .. })
        ));
        assert!(matches!(
            PortAllocator::new(0, 9),
            Err(PortsError::InvalidRange { .. })
        ));
        // 11..=12 holds no even/odd pair (12 would need 13).
        let alloc = PortAllocator::new(11, 12).unwrap();
        assert!(matches!(
            alloc.allocate(LOCALHOST, PortMode::Pair),
            Err(PortsError::InvalidRange { .. })
        ));
        // An address that is not ours: a bind error, not exhaustion.
        let (min, max) = free_range(2);
        let alloc = PortAllocator::new(min, max).unwrap();
        let foreign = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        assert!(matches!(
            alloc.allocate(foreign, PortMode::Mux),
            Err(PortsError::Bind { .. })
        ));
        assert_eq!(alloc.in_use(), 0);
    }
}

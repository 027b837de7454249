//! Socket setup for every UDP user of mdi — the reliable-UDP sender and receiver, the
//! ITCH receive path and the simulated venue: binding, joining a group, and socket
//! buffers sized with one policy (forced past the kernel's cap with CAP_NET_ADMIN, a
//! warning naming the sysctl otherwise).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};

use mdi_protocol::udp::{Channel, Endpoint};
use socket2::{Domain, Protocol, Socket, Type};

/// Socket buffer asked for: bursts of a fast sender must not overflow it.
pub const BUFFER_BYTES: usize = 8 << 20;

/// Asks for [`BUFFER_BYTES`]-sized socket buffers (receive; and send for a sender). The
/// kernel caps the plain request at `net.core.rmem_max`/`wmem_max` — 208 KiB by
/// default, also in every new network namespace — so with the privilege for it
/// (CAP_NET_ADMIN) the size is forced past the cap; otherwise a warning says what to
/// raise, as bursts beyond the buffer become loss to repair. The one buffer policy of
/// every mdi socket.
pub fn grow_buffers(socket: &Socket, send: bool) {
    use nix::sys::socket::{setsockopt, sockopt};
    let _ = socket.set_recv_buffer_size(BUFFER_BYTES);
    // Linux reports twice the size asked (bookkeeping overhead included)
    if socket.recv_buffer_size().unwrap_or(0) < BUFFER_BYTES {
        let _ = setsockopt(socket, sockopt::RcvBufForce, &BUFFER_BYTES);
    }
    let got = socket.recv_buffer_size().unwrap_or(0);
    if got < BUFFER_BYTES {
        tracing::warn!(
            "UDP receive buffer is {got} bytes, not {BUFFER_BYTES}: raise net.core.rmem_max (or run with CAP_NET_ADMIN), or bursts overflow into loss"
        );
    }
    if send {
        let _ = socket.set_send_buffer_size(BUFFER_BYTES);
        if socket.send_buffer_size().unwrap_or(0) < BUFFER_BYTES {
            let _ = setsockopt(socket, sockopt::SndBufForce, &BUFFER_BYTES);
        }
    }
}

/// A socket bound to `group`'s port on every address (shared with other receivers on
/// the host: unicast answers to this socket, e.g. MoldUDP64 re-requests, arrive here
/// too) and joined to the group on `interface`, with grown buffers.
pub fn join_group(group: SocketAddrV4, interface: Ipv4Addr) -> io::Result<UdpSocket> {
    join_group_at(group, interface, Ipv4Addr::UNSPECIFIED)
}

/// Like [`join_group`], but bound to the group's own address: only datagrams sent to the
/// group arrive, never unicast to the port (a forged "answer" from anywhere). For feeds
/// whose unicast traffic goes to a socket of its own (MoldUDP64 re-request answers).
pub fn join_group_only(group: SocketAddrV4, interface: Ipv4Addr) -> io::Result<UdpSocket> {
    join_group_at(group, interface, *group.ip())
}

fn join_group_at(
    group: SocketAddrV4,
    interface: Ipv4Addr,
    bind_ip: Ipv4Addr,
) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    grow_buffers(&socket, false);
    let bind = SocketAddrV4::new(bind_ip, group.port());
    socket
        .bind(&bind.into())
        .map_err(|e| context(e, format!("binding {bind}")))?;
    socket
        .join_multicast_v4(group.ip(), &interface)
        .map_err(|e| context(e, format!("joining {} on {interface}", group.ip())))?;
    Ok(socket.into())
}

/// A socket that sends multicast from `interface` (bound to it, `IP_MULTICAST_IF`) with
/// `ttl`, looped back to receivers on the same host, with grown buffers.
pub fn multicast_sender(interface: Ipv4Addr, ttl: u32) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket
        .bind(&SocketAddr::V4(SocketAddrV4::new(interface, 0)).into())
        .map_err(|e| context(e, format!("binding {interface}")))?;
    if interface != Ipv4Addr::UNSPECIFIED {
        socket.set_multicast_if_v4(&interface)?;
    }
    socket.set_multicast_ttl_v4(ttl)?;
    socket.set_multicast_loop_v4(true)?;
    grow_buffers(&socket, true);
    Ok(socket.into())
}

/// `error` with what was being done in front.
fn context(error: io::Error, what: String) -> io::Error {
    io::Error::new(error.kind(), format!("{what}: {error}"))
}

/// A socket a receiver reads a channel on: [`join_group`] for multicast, or bound to the
/// unicast address.
pub fn bind_receiver(channel: &Channel) -> io::Result<UdpSocket> {
    match channel.endpoint {
        Endpoint::Multicast { group, iface, .. } => join_group(group, iface),
        Endpoint::Unicast { addr } => {
            let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
            grow_buffers(&socket, false);
            socket.bind(&addr.into())?;
            Ok(socket.into())
        }
    }
}

/// A socket a sender sends a channel from, and where to send: [`multicast_sender`] to
/// the group, or unicast to the receiver's address. NAKs and STATUS come back to this
/// socket.
pub fn bind_sender(channel: &Channel) -> io::Result<(UdpSocket, SocketAddr)> {
    match channel.endpoint {
        Endpoint::Multicast { group, iface, ttl } => {
            Ok((multicast_sender(iface, ttl)?, SocketAddr::V4(group)))
        }
        Endpoint::Unicast { addr } => {
            let local: SocketAddr = match addr {
                SocketAddr::V4(_) => SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
                SocketAddr::V6(_) => "[::]:0".parse().map_err(io::Error::other)?,
            };
            let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
            grow_buffers(&socket, true);
            socket.bind(&local.into())?;
            Ok((socket.into(), addr))
        }
    }
}

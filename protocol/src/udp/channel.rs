//! Channel URIs: where a stream goes on the network.
//!
//! - `udp://GROUP:PORT?iface=ADDR&ttl=N` — multicast to an IPv4 group, sent from and
//!   joined on the interface with address `ADDR` (default 0.0.0.0: the routing table's
//!   choice), with multicast TTL `N` (default 1: the local network only);
//! - `udp://HOST:PORT` — unicast: the sender sends to `HOST:PORT`, the receiver binds it.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, ToSocketAddrs};

/// A parsed channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// IPv4 multicast.
    Multicast {
        /// Group address and port.
        group: SocketAddrV4,
        /// Interface address to send from and join on.
        iface: Ipv4Addr,
        /// Multicast TTL.
        ttl: u32,
    },
    /// Unicast to (or, for a receiver, on) one address.
    Unicast {
        /// The address.
        addr: SocketAddr,
    },
}

/// Why a channel URI was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bad channel {uri:?}: {problem} (expected udp://GROUP:PORT?iface=ADDR&ttl=N or udp://HOST:PORT)"
)]
pub struct ChannelError {
    /// The URI given.
    pub uri: String,
    /// What is wrong.
    pub problem: String,
}

impl Channel {
    /// Parses a channel URI. Host names are resolved (this reads `/etc/hosts`, nothing
    /// else is touched).
    pub fn parse(uri: &str) -> Result<Self, ChannelError> {
        let error = |problem: &str| ChannelError {
            uri: uri.to_owned(),
            problem: problem.to_owned(),
        };
        let rest = uri
            .strip_prefix("udp://")
            .ok_or_else(|| error("the scheme must be udp://"))?;
        let (authority, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        let addr: SocketAddr = match authority.parse() {
            Ok(addr) => addr,
            Err(_) => authority
                .to_socket_addrs()
                .map_err(|e| error(&format!("cannot resolve {authority}: {e}")))?
                .next()
                .ok_or_else(|| error("the host has no address"))?,
        };
        if addr.port() == 0 {
            return Err(error("the port must not be 0"));
        }
        let mut iface = Ipv4Addr::UNSPECIFIED;
        let mut ttl = 1u32;
        for pair in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|p| !p.is_empty())
        {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| error(&format!("parameter {pair:?} has no value")))?;
            match key {
                "iface" => {
                    iface = value
                        .parse()
                        .map_err(|_| error(&format!("iface={value} is not an IPv4 address")))?;
                }
                "ttl" => {
                    ttl = value
                        .parse()
                        .ok()
                        .filter(|t| (1..=255).contains(t))
                        .ok_or_else(|| error(&format!("ttl={value} is not 1..=255")))?;
                }
                other => return Err(error(&format!("unknown parameter {other:?}"))),
            }
        }
        match addr {
            SocketAddr::V4(group) if group.ip().is_multicast() => {
                Ok(Self::Multicast { group, iface, ttl })
            }
            _ if query.is_some_and(|q| !q.is_empty()) => {
                Err(error("iface and ttl apply to multicast groups only"))
            }
            SocketAddr::V6(v6) if v6.ip().is_multicast() => {
                Err(error("IPv6 multicast is not supported"))
            }
            addr => Ok(Self::Unicast { addr }),
        }
    }

    /// Whether receivers should back off randomly before NAKing (many may see a gap).
    pub fn is_multicast(&self) -> bool {
        matches!(self, Self::Multicast { .. })
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Multicast { group, iface, ttl } => {
                write!(f, "udp://{group}?iface={iface}&ttl={ttl}")
            }
            Self::Unicast { addr } => write!(f, "udp://{addr}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multicast_and_unicast() {
        assert_eq!(
            Channel::parse("udp://239.1.2.3:4000?iface=10.0.0.1&ttl=4").unwrap(),
            Channel::Multicast {
                group: "239.1.2.3:4000".parse().unwrap(),
                iface: "10.0.0.1".parse().unwrap(),
                ttl: 4
            }
        );
        assert_eq!(
            Channel::parse("udp://239.1.2.3:4000").unwrap(),
            Channel::Multicast {
                group: "239.1.2.3:4000".parse().unwrap(),
                iface: Ipv4Addr::UNSPECIFIED,
                ttl: 1
            }
        );
        assert_eq!(
            Channel::parse("udp://127.0.0.1:9000").unwrap(),
            Channel::Unicast {
                addr: "127.0.0.1:9000".parse().unwrap()
            }
        );
        assert_eq!(
            Channel::parse("udp://localhost:9000").unwrap(),
            Channel::Unicast {
                addr: "127.0.0.1:9000".parse().unwrap()
            }
        );
        let round = Channel::parse("udp://239.1.2.3:4000?iface=10.0.0.1&ttl=4").unwrap();
        assert_eq!(Channel::parse(&round.to_string()).unwrap(), round);
    }

    #[test]
    fn refuses_what_it_cannot_use_and_says_why() {
        for (uri, says) in [
            ("tcp://1.2.3.4:5", "scheme"),
            ("udp://239.1.2.3:0", "port"),
            ("udp://239.1.2.3:5?ttl=0", "ttl"),
            ("udp://239.1.2.3:5?iface=eth0", "iface"),
            ("udp://239.1.2.3:5?color=blue", "unknown parameter"),
            ("udp://127.0.0.1:5?ttl=3", "multicast groups only"),
            ("udp://239.1.2.3:5?ttl", "no value"),
            ("udp://[ff02::1]:5", "IPv6"),
        ] {
            let err = Channel::parse(uri).unwrap_err().to_string();
            assert!(err.contains(says), "{uri}: {err}");
        }
    }
}

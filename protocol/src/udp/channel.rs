//! Channel URIs: where a stream goes on the network.
//!
//! - `udp://GROUP:PORT?iface=ADDR&ttl=N` — multicast to an IPv4 group, sent from and
//!   joined on the interface with address `ADDR` (default 0.0.0.0: the routing table's
//!   choice), with multicast TTL `N` (default 1: the local network only);
//! - `udp://HOST:PORT` — unicast: the sender sends to `HOST:PORT`, the receiver binds it;
//! - either with `key=FILE` — every frame tagged with the pre-shared key in `FILE`
//!   ([`super::auth`]); both ends must name the same key.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, ToSocketAddrs};

use super::auth::ChannelKey;

/// A parsed channel: where, and the key its frames are tagged with (if any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel {
    /// Where the frames go.
    pub endpoint: Endpoint,
    /// The pre-shared key: frames are tagged and only frames whose tag verifies are
    /// taken. `None`: frames go untagged (the network is trusted).
    pub key: Option<ChannelKey>,
}

/// Where a channel's frames go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
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
    "bad channel {uri:?}: {problem} (expected udp://GROUP:PORT?iface=ADDR&ttl=N or udp://HOST:PORT, either with &key=FILE)"
)]
pub struct ChannelError {
    /// The URI given.
    pub uri: String,
    /// What is wrong.
    pub problem: String,
}

impl Channel {
    /// An unkeyed channel to `endpoint`.
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            key: None,
        }
    }

    /// Parses a channel URI. Host names are resolved (this reads `/etc/hosts`) and a
    /// `key=FILE` is read (see [`ChannelKey::from_file`]); nothing else is touched.
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
        let mut key = None;
        let mut multicast_only = false;
        for pair in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|p| !p.is_empty())
        {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| error(&format!("parameter {pair:?} has no value")))?;
            match name {
                "key" => {
                    key = Some(
                        ChannelKey::from_file(std::path::Path::new(value))
                            .map_err(|e| error(&e.to_string()))?,
                    );
                }
                "iface" => {
                    multicast_only = true;
                    iface = value
                        .parse()
                        .map_err(|_| error(&format!("iface={value} is not an IPv4 address")))?;
                }
                "ttl" => {
                    multicast_only = true;
                    ttl = value
                        .parse()
                        .ok()
                        .filter(|t| (1..=255).contains(t))
                        .ok_or_else(|| error(&format!("ttl={value} is not 1..=255")))?;
                }
                other => return Err(error(&format!("unknown parameter {other:?}"))),
            }
        }
        let endpoint = match addr {
            SocketAddr::V4(group) if group.ip().is_multicast() => {
                Endpoint::Multicast { group, iface, ttl }
            }
            _ if multicast_only => {
                return Err(error("iface and ttl apply to multicast groups only"));
            }
            SocketAddr::V6(v6) if v6.ip().is_multicast() => {
                return Err(error("IPv6 multicast is not supported"));
            }
            addr => Endpoint::Unicast { addr },
        };
        Ok(Self { endpoint, key })
    }

    /// Whether receivers should back off randomly before NAKing (many may see a gap).
    pub fn is_multicast(&self) -> bool {
        matches!(self.endpoint, Endpoint::Multicast { .. })
    }
}

/// The URI, with a key shown by its fingerprint (`key=#1a2b3c4d`), never the key or
/// its file.
impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.endpoint {
            Endpoint::Multicast { group, iface, ttl } => {
                write!(f, "udp://{group}?iface={iface}&ttl={ttl}")?;
            }
            Endpoint::Unicast { addr } => write!(f, "udp://{addr}")?,
        }
        if let Some(key) = &self.key {
            let separator = if self.is_multicast() { '&' } else { '?' };
            write!(f, "{separator}key=#{}", key.fingerprint())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multicast_and_unicast() {
        assert_eq!(
            Channel::parse("udp://239.1.2.3:4000?iface=10.0.0.1&ttl=4").unwrap(),
            Channel::new(Endpoint::Multicast {
                group: "239.1.2.3:4000".parse().unwrap(),
                iface: "10.0.0.1".parse().unwrap(),
                ttl: 4
            })
        );
        assert_eq!(
            Channel::parse("udp://239.1.2.3:4000").unwrap(),
            Channel::new(Endpoint::Multicast {
                group: "239.1.2.3:4000".parse().unwrap(),
                iface: Ipv4Addr::UNSPECIFIED,
                ttl: 1
            })
        );
        assert_eq!(
            Channel::parse("udp://127.0.0.1:9000").unwrap(),
            Channel::new(Endpoint::Unicast {
                addr: "127.0.0.1:9000".parse().unwrap()
            })
        );
        assert_eq!(
            Channel::parse("udp://localhost:9000").unwrap(),
            Channel::new(Endpoint::Unicast {
                addr: "127.0.0.1:9000".parse().unwrap()
            })
        );
        let round = Channel::parse("udp://239.1.2.3:4000?iface=10.0.0.1&ttl=4").unwrap();
        assert_eq!(Channel::parse(&round.to_string()).unwrap(), round);
    }

    #[test]
    fn a_key_file_is_read_and_shown_only_by_fingerprint() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("link.key");
        std::fs::write(&path, "5a".repeat(32)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let key = ChannelKey::from_secret(&[0x5a; 32]);
        for (uri, shown) in [
            (
                format!("udp://239.1.2.3:4000?iface=10.0.0.1&key={}", path.display()),
                format!(
                    "udp://239.1.2.3:4000?iface=10.0.0.1&ttl=1&key=#{}",
                    key.fingerprint()
                ),
            ),
            (
                format!("udp://127.0.0.1:9000?key={}", path.display()),
                format!("udp://127.0.0.1:9000?key=#{}", key.fingerprint()),
            ),
        ] {
            let channel = Channel::parse(&uri).unwrap();
            assert_eq!(channel.key, Some(key));
            assert_eq!(channel.to_string(), shown);
        }
        let err = Channel::parse("udp://127.0.0.1:9000?key=/nonexistent/key")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/key"), "{err}");
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

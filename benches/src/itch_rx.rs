//! `mdbench itch-rx`: receiving an ITCH multicast feed through a socket and through DPDK,
//! on the same traffic. Two hosts as network namespaces joined by a veth pair (created
//! here, deleted after; nothing leaves the machine): a sender on core 0 sends the
//! synthetic feed's MoldUDP64 packets to the group, a receiver on core 1 takes them —
//! a UDP socket joined to the group (one `recv` per datagram), or DPDK's `net_af_packet`
//! port on the veth (bursts from a memory-mapped ring, Ethernet/IPv4/UDP parsed and
//! filtered on the group in user space).
//!
//! Queued: the whole traffic is sent first and held by the kernel (the socket's buffer,
//! the packet ring), then the receiver drains it as fast as it can — its packets/s is
//! what the receive path costs, not what the sender manages (on veth the sender's core
//! also carries the kernel's receive work). Paced (a rate both keep up with, both
//! spinning): send → receive latency, the send time carried in each packet's session
//! field (these packets are for receiving only; the feed's content is unchanged).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Command;

use anyhow::{Context, Result, bail};
use mdi_itch::sim::{SimConfig, messages, packets};

use crate::harness::{Latency, ResultLine, Role, histogram, now_ns, pin, report};

const GROUP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(233, 54, 12, 1), 26_400);
const SENDER: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 1);
const RECEIVER: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 2);
/// The receiver's side of the veth pair.
const RECEIVER_IF: &str = "rx0";

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// Two namespaces joined by a veth pair, deleted on drop.
struct Hosts {
    sender: String,
    receiver: String,
}

impl Hosts {
    fn create() -> Option<Self> {
        let pid = std::process::id();
        let hosts = Self {
            sender: format!("mdbench-tx-{pid}"),
            receiver: format!("mdbench-rx-{pid}"),
        };
        if !ip(&["netns", "add", &hosts.sender]) {
            return None;
        }
        if !ip(&["netns", "add", &hosts.receiver]) {
            return None;
        }
        let (tx, rx) = (hosts.sender.as_str(), hosts.receiver.as_str());
        let ok = ip(&[
            "-n",
            tx,
            "link",
            "add",
            "tx0",
            "type",
            "veth",
            "peer",
            "name",
            RECEIVER_IF,
            "netns",
            rx,
        ]) && [(tx, "tx0", SENDER), (rx, RECEIVER_IF, RECEIVER)]
            .iter()
            .all(|(ns, dev, addr)| {
                ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])
                    && ip(&["-n", ns, "link", "set", dev, "up"])
                    && ip(&["-n", ns, "link", "set", "lo", "up"])
                    && ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", dev])
            });
        ok.then_some(hosts)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in [&self.sender, &self.receiver] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `mdbench itch-rx`.
pub fn run(quick: bool) -> Result<()> {
    let Some(hosts) = Hosts::create() else {
        println!("# itch-rx skipped: creating network namespaces needs root");
        return Ok(());
    };
    let queued: u64 = if quick { 100_000 } else { 400_000 };
    let paced: u64 = if quick { 20_000 } else { 100_000 };
    let mut impls = vec!["socket"];
    if cfg!(feature = "dpdk") {
        impls.push("dpdk");
    } else {
        println!("# itch-rx dpdk skipped: build mdbench with --features dpdk");
    }
    for (mode, packets, rate) in [("queued", queued, 0u64), ("paced", paced, 50_000)] {
        for implementation in &impls {
            let mut receiver = Role::spawn_in(
                Some(&hosts.receiver),
                &[
                    "itch-rx-receive".into(),
                    (*implementation).into(),
                    packets.to_string(),
                ],
            )?;
            receiver.expect("ready")?;
            if mode == "paced" {
                receiver.send("go")?;
            }
            let mut sender = Role::spawn_in(
                Some(&hosts.sender),
                &["itch-rx-send".into(), packets.to_string(), rate.to_string()],
            )?;
            let sent = sender.expect("sent")?;
            if mode == "queued" {
                receiver.send("go")?;
            }
            let received = receiver.expect("received")?;
            sender.finish()?;
            receiver.finish()?;
            let count = crate::harness::field(&received, "packets")?;
            let elapsed = crate::harness::field(&received, "elapsed_ns")?;
            let send_ns = crate::harness::field(&sent, "elapsed_ns")?;
            let mut line = ResultLine::new(&format!("itch-rx-{mode}"), implementation)
                .field("sent", packets)
                .field("received", count)
                .field(
                    "loss_pct",
                    format!(
                        "{:.2}",
                        100.0 * (packets - count.min(packets)) as f64 / packets as f64
                    ),
                )
                .field(
                    "send_pps",
                    format!("{:.0}", packets as f64 * 1e9 / send_ns.max(1) as f64),
                )
                .field(
                    "receive_pps",
                    format!("{:.0}", count as f64 * 1e9 / elapsed.max(1) as f64),
                );
            if mode == "paced" {
                line = line.latency(Latency::parse(&received)?);
            }
            line.print();
        }
    }
    drop(hosts);
    Ok(())
}

/// The feed's packets, the send time to be written over each one's session field.
fn traffic(count: u64) -> Vec<Vec<u8>> {
    let config = SimConfig {
        messages: count * 30,
        symbols: 100,
        seed: 3,
        ..SimConfig::default()
    };
    let all = packets(&config, &messages(&config));
    all.into_iter()
        .map(|(_, p)| p)
        .cycle()
        .take(usize::try_from(count).unwrap_or(usize::MAX))
        .collect()
}

/// Child role: send `count` packets to the group at `rate` per second (0: flat out).
pub fn send(count: u64, rate: u64) -> Result<()> {
    pin(0);
    let mut packets = traffic(count);
    let socket =
        mdi_transport::socket::multicast_sender(SENDER, 1).context("binding the sender")?;
    let interval = 1_000_000_000u64.checked_div(rate);
    let started = now_ns();
    for (i, packet) in packets.iter_mut().enumerate() {
        if let Some(interval) = interval {
            crate::harness::spin_until(started + interval * i as u64);
        }
        packet[..8].copy_from_slice(&now_ns().to_le_bytes());
        socket.send_to(packet, GROUP).context("sending")?;
    }
    report(&format!("sent elapsed_ns={}", now_ns() - started));
    Ok(())
}

/// What a receiver saw.
struct Tally {
    latency: hdrhistogram::Histogram<u64>,
    received: u64,
    first: u64,
    last: u64,
}

impl Tally {
    fn take(&mut self, payload: &[u8]) {
        let now = now_ns();
        if self.received == 0 {
            self.first = now;
        }
        self.last = now;
        self.received += 1;
        if let Some(stamp) = payload.get(..8) {
            let sent = u64::from_le_bytes(stamp.try_into().unwrap_or_default());
            let _ = self.latency.record(now.saturating_sub(sent).max(1));
        }
    }

    /// The traffic has stopped: 300 ms without a packet after the first (10 s before).
    fn idle(&self) -> bool {
        let idle_ms = if self.received == 0 { 10_000 } else { 300 };
        now_ns().saturating_sub(self.last) > idle_ms * 1_000_000
    }
}

/// Child role: receive through `implementation` until `count` packets came or the
/// traffic stopped.
pub fn receive(implementation: &str, count: u64) -> Result<()> {
    pin(1);
    let mut tally = Tally {
        latency: histogram(),
        received: 0,
        first: 0,
        last: 0,
    };
    match implementation {
        "socket" => {
            let socket = mdi_publisher::itch::live::multicast_socket(GROUP, RECEIVER)?;
            // room for the whole queued traffic (root may exceed rmem_max)
            nix::sys::socket::setsockopt(
                &socket,
                nix::sys::socket::sockopt::RcvBufForce,
                &(1 << 30),
            )
            .context("SO_RCVBUFFORCE")?;
            socket.set_nonblocking(true)?;
            let mut buffer = vec![0u8; 65_536];
            report("ready");
            crate::harness::await_command("go")?;
            tally.last = now_ns();
            while tally.received < count && !tally.idle() {
                if let Ok(n) = socket.recv(&mut buffer) {
                    tally.take(&buffer[..n]);
                }
            }
        }
        "dpdk" => receive_dpdk(count, &mut tally)?,
        other => bail!("no receiver {other}"),
    }
    report(&format!(
        "received packets={} elapsed_ns={} {}",
        tally.received,
        tally.last.saturating_sub(tally.first),
        Latency::of(&tally.latency).report()
    ));
    Ok(())
}

#[cfg(feature = "dpdk")]
fn receive_dpdk(count: u64, tally: &mut Tally) -> Result<()> {
    use mdi_itch::pcap::udp_datagram;
    use mdi_publisher::itch::dpdk::{DpdkConfig, DpdkPort, eal_args};
    // lcore 1, as the socket receiver
    let mut eal_args = eal_args(1, 1024);
    // a packet ring with room for the whole queued traffic
    eal_args.push(format!(
        "--vdev=net_af_packet0,iface={RECEIVER_IF},framecnt=524288,blocksz=4096,framesz=2048"
    ));
    let mut port = DpdkPort::open(&DpdkConfig {
        eal_args,
        port: Some("net_af_packet0".into()),
        ..DpdkConfig::default()
    })?;
    report("ready");
    crate::harness::await_command("go")?;
    tally.last = now_ns();
    while tally.received < count && !tally.idle() {
        port.poll(0, |frame| {
            if let Some(datagram) = udp_datagram(frame.data).filter(|d| d.destination == GROUP) {
                tally.take(datagram.payload);
            }
        });
    }
    Ok(())
}

#[cfg(not(feature = "dpdk"))]
fn receive_dpdk(_: u64, _: &mut Tally) -> Result<()> {
    bail!("mdbench was built without the dpdk feature")
}

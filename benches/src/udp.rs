//! `mdbench udp`: ring-to-replica over reliable UDP, against a raw UDP floor.
//!
//! The writer and the sender share a thread on core 0 (as in `mdpub`); the receiver and
//! a reader of its replica share a thread on core 1, busy-polling. Latency is from the
//! source append (stamped in the record) to the record being readable in the replica.
//! Multicast runs inside a network namespace the benchmark makes (root only).

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use hdrhistogram::Histogram;
use mdi_protocol::records::RecordKind;
use mdi_protocol::ring::{ReadEvent, RingOptions, RingReader, RingWriter, ShmDir, StartAt};
use mdi_protocol::udp::{Channel, ChannelKey};
use mdi_transport::receiver::{UdpReceiver, UdpReceiverOptions};
use mdi_transport::sender::{UdpSender, UdpSenderOptions};

use crate::harness::{Latency, ResultLine, histogram, msgs_per_s, now_ns, pin, spin_until};

/// What `mdbench udp` runs.
#[derive(Debug, Clone)]
pub struct UdpBench {
    pub quick: bool,
    /// Run only the multicast scenarios, here (inside the namespace the parent made).
    pub inside_netns: bool,
    /// Only these implementations (floor, mdi, aeron); empty: all.
    pub impls: Vec<String>,
}

const SIZE: usize = 64;
const PACE_NS: u64 = 20_000;
/// Flat-out runs keep the writer at most this many records ahead of the slowest
/// receiver: the rate measured is one the receivers sustain (about 4 MB in flight, well
/// inside the 8 MiB socket buffers).
const RECEIVER_WINDOW: u64 = 50_000;

pub fn run(bench: &UdpBench) -> Result<()> {
    let latency_records: u64 = if bench.quick { 10_000 } else { 100_000 };
    let throughput_records: u64 = if bench.quick { 1_000_000 } else { 10_000_000 };
    if bench.inside_netns {
        let channel = Channel::parse("udp://239.255.60.1:40600?iface=127.0.0.1")?;
        report_latency(
            "multicast",
            pipeline(channel, latency_records, PACE_NS, 0.0)?,
        );
        report_throughput("multicast", pipeline(channel, throughput_records, 0, 0.0)?);
        report_loss(
            "multicast",
            3,
            0.05,
            pipeline_to(channel, latency_records, PACE_NS, 0.05, 3)?,
        );
        return Ok(());
    }
    println!(
        "# mdbench udp: writer+sender on core 0, receiver+replica reader on core 1, {SIZE}-byte payloads"
    );
    let wants = |name: &str| bench.impls.is_empty() || bench.impls.iter().any(|i| i == name);
    if wants("floor") {
        let floor = raw_floor(latency_records)?;
        ResultLine::new("udp-latency", "floor")
            .field("mode", "unicast")
            .field("size", SIZE)
            .latency(floor)
            .field("delivered", floor.count)
            .print();
    }
    if wants("mdi") {
        report_latency(
            "unicast",
            pipeline(unicast()?, latency_records, PACE_NS, 0.0)?,
        );
        report_latency(
            "unicast-keyed",
            pipeline(keyed(unicast()?), latency_records, PACE_NS, 0.0)?,
        );
    }
    if wants("aeron") {
        aeron_latency(latency_records)?;
    }
    if wants("mdi") {
        // keyed and unkeyed alternate, so drift on a noisy machine hits both alike
        for _ in 0..2 {
            report_throughput("unicast", pipeline(unicast()?, throughput_records, 0, 0.0)?);
            report_throughput(
                "unicast-keyed",
                pipeline(keyed(unicast()?), throughput_records, 0, 0.0)?,
            );
        }
    }
    if wants("aeron") {
        aeron_throughput(throughput_records)?;
    }
    if wants("mdi") {
        for loss in [0.01, 0.05] {
            report_loss(
                "unicast",
                1,
                loss,
                pipeline(unicast()?, latency_records, PACE_NS, loss)?,
            );
        }
        multicast_in_netns(bench.quick)?;
    }
    Ok(())
}

#[cfg(feature = "aeron")]
fn aeron_latency(records: u64) -> Result<()> {
    let outcome = crate::aeron::unicast(records, SIZE, PACE_NS)?;
    ResultLine::new("udp-latency", "aeron")
        .field("mode", "unicast")
        .field("size", SIZE)
        .latency(outcome.latency())
        .field("delivered", outcome.delivered)
        .field("driver", crate::aeron::DRIVER_MODE)
        .print();
    Ok(())
}

#[cfg(feature = "aeron")]
fn aeron_throughput(records: u64) -> Result<()> {
    let outcome = crate::aeron::unicast(records, SIZE, 0)?;
    ResultLine::new("udp-throughput", "aeron")
        .field("mode", "unicast")
        .field("size", SIZE)
        .field(
            "msgs_per_s",
            msgs_per_s(outcome.delivered, outcome.elapsed_ns),
        )
        .field("delivered", outcome.delivered)
        .field("driver", crate::aeron::DRIVER_MODE)
        .print();
    Ok(())
}

/// Without the `aeron` feature the peer is not built: say so where its lines would be.
#[cfg(not(feature = "aeron"))]
fn aeron_latency(_records: u64) -> Result<()> {
    println!(
        "# aeron peer not built: scripts/prepare.sh aeron, then build mdbench with --features aeron"
    );
    Ok(())
}

#[cfg(not(feature = "aeron"))]
fn aeron_throughput(_records: u64) -> Result<()> {
    Ok(())
}

fn unicast() -> Result<Channel> {
    let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    Ok(Channel::parse(&format!("udp://127.0.0.1:{port}"))?)
}

/// `channel` with a pre-shared key: every frame tagged (keyed BLAKE3) and checked.
fn keyed(mut channel: Channel) -> Channel {
    channel.key = Some(ChannelKey::from_secret(&[0x6d; 32]));
    channel
}

fn report_latency(mode: &str, outcome: Outcome) {
    ResultLine::new("udp-latency", "mdi")
        .field("mode", mode)
        .field("size", SIZE)
        .latency(Latency::of(&outcome.latency))
        .field("delivered", outcome.delivered)
        .print();
}

fn report_loss(mode: &str, receivers: usize, loss: f64, outcome: Outcome) {
    let recovery = Latency::of(&outcome.recovery);
    ResultLine::new("udp-loss", "mdi")
        .field("mode", mode)
        .field("receivers", receivers)
        .field("size", SIZE)
        .field("loss", loss)
        .field(
            "delivered",
            format!("{:.4}", outcome.delivered as f64 / outcome.sent as f64),
        )
        .field("p50_ns", Latency::of(&outcome.latency).p50)
        .field("p99_ns", Latency::of(&outcome.latency).p99)
        .field("recovery_p50_ns", recovery.p50)
        .field("recovery_p99_ns", recovery.p99)
        .field("recovery_max_ns", recovery.max)
        .field(
            "retransmit_ratio",
            format!(
                "{:.2}",
                outcome.retransmit_bytes as f64 / outcome.dropped_bytes.max(1) as f64
            ),
        )
        .print();
}

fn report_throughput(mode: &str, outcome: Outcome) {
    ResultLine::new("udp-throughput", "mdi")
        .field("mode", mode)
        .field("size", SIZE)
        .field(
            "msgs_per_s",
            msgs_per_s(outcome.delivered, outcome.elapsed_ns),
        )
        .field("delivered", outcome.delivered)
        .print();
}

/// Re-runs the multicast scenarios inside a fresh network namespace (loopback with a
/// multicast route), so nothing is sent on the host's interfaces.
fn multicast_in_netns(quick: bool) -> Result<()> {
    let name = format!("mdbench-{}", std::process::id());
    let ok = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ok(&["netns", "add", &name]) {
        println!("# udp multicast skipped: creating a network namespace needs root");
        return Ok(());
    }
    let result = (|| -> Result<()> {
        if !ok(&["-n", &name, "link", "set", "lo", "up"])
            || !ok(&["-n", &name, "route", "add", "224.0.0.0/4", "dev", "lo"])
        {
            bail!("setting up the namespace's multicast route");
        }
        let exe = std::env::current_exe()?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &name])
            .arg(exe)
            .args(["udp", "--inside-netns"]);
        if quick {
            command.arg("--quick");
        }
        if !command.status()?.success() {
            bail!("multicast benchmark inside the namespace failed");
        }
        Ok(())
    })();
    let _ = ok(&["netns", "del", &name]);
    result
}

struct Outcome {
    latency: Histogram<u64>,
    /// Gap open → closed at the receiver.
    recovery: Histogram<u64>,
    sent: u64,
    delivered: u64,
    elapsed_ns: u64,
    retransmit_bytes: u64,
    dropped_bytes: u64,
}

/// Source ring → `UdpSender` → socket → `UdpReceiver` → replica ring → reader.
/// `pace_ns == 0`: flat out. `loss`: the receiver's loss generator.
fn pipeline(channel: Channel, records: u64, pace_ns: u64, loss: f64) -> Result<Outcome> {
    pipeline_to(channel, records, pace_ns, loss, 1)
}

/// [`pipeline`] with `receivers` receivers (each with its own replica and loss
/// generator), polled round-robin on core 1; figures cover all of them.
fn pipeline_to(
    channel: Channel,
    records: u64,
    pace_ns: u64,
    loss: f64,
    receivers: usize,
) -> Result<Outcome> {
    let base = tempfile::Builder::new()
        .prefix("mdbench-udp-")
        .tempdir_in(shm_root())?;
    let src = ShmDir::new(base.path().join("src"));
    let dsts: Vec<ShmDir> = (0..receivers)
        .map(|i| ShmDir::new(base.path().join(format!("dst{i}"))))
        .collect();
    let options = RingOptions::default()
        .capacity(128 << 20)
        .now_ns(i64::try_from(now_ns()).unwrap_or(0));
    let mut writer = RingWriter::create(&src, "bench", &options)?;
    let mut group: Vec<UdpReceiver> = dsts
        .iter()
        .enumerate()
        .map(|(i, dst)| {
            UdpReceiver::new(
                channel,
                dst.clone(),
                UdpReceiverOptions {
                    debug_drop_rate: loss,
                    debug_seed: 5 + i as u64,
                    ..UdpReceiverOptions::default()
                },
            )
        })
        .collect::<Result<_, _>>()?;
    let mut sender = UdpSender::new(
        channel,
        &src,
        &["bench".to_string()],
        &UdpSenderOptions {
            linger: Duration::from_millis(200),
            ..UdpSenderOptions::default()
        },
    )?;
    let done = Arc::new(AtomicBool::new(false));
    let joined = Arc::new(AtomicBool::new(false));
    // Records the slowest receiver has delivered, so a flat-out writer can stay within a
    // window of it (no flow control exists towards receivers, by design).
    let progress = Arc::new(AtomicU64::new(0));
    let receiving = {
        let done = Arc::clone(&done);
        let joined = Arc::clone(&joined);
        let progress = Arc::clone(&progress);
        let dsts = dsts.clone();
        std::thread::spawn(move || -> Result<Outcome> {
            pin(1);
            let mut latency = histogram();
            let mut recovery = histogram();
            let n = group.len();
            let mut readers: Vec<Option<RingReader>> = (0..n).map(|_| None).collect();
            let mut delivered = vec![0u64; n];
            let (mut first, mut last) = (0u64, 0u64);
            let mut gap_since: Vec<Option<u64>> = vec![None; n];
            let deadline = Instant::now() + Duration::from_secs(60);
            while !group.iter().all(UdpReceiver::all_ended) && !done.load(Ordering::Relaxed) {
                if Instant::now() > deadline {
                    let stats: Vec<_> = group
                        .iter()
                        .flat_map(|r| r.stats())
                        .map(|s| (s.position, s.high_water, s.counters))
                        .collect();
                    bail!("receivers did not finish: {stats:?}");
                }
                for (i, receiver) in group.iter_mut().enumerate() {
                    receiver.poll(Duration::ZERO)?;
                    let now = now_ns();
                    if let Some((position, high_water)) = receiver.progress().next() {
                        match (position, high_water, gap_since[i]) {
                            (Some(p), Some(h), None) if h > p => gap_since[i] = Some(now),
                            (Some(p), Some(h), Some(since)) if h <= p => {
                                let _ = recovery.record((now - since).max(1));
                                gap_since[i] = None;
                            }
                            _ => {}
                        }
                    }
                    if readers[i].is_none() {
                        readers[i] = RingReader::open(&dsts[i], "bench", StartAt::Earliest).ok();
                        joined.store(readers.iter().all(Option::is_some), Ordering::Release);
                    }
                    if let Some(reader) = &mut readers[i] {
                        let count = &mut delivered[i];
                        reader.poll(1024, |event| {
                            if let ReadEvent::Record(r) = event
                                && r.body.len() >= 16
                                && r.body[..8] != u64::MAX.to_le_bytes()
                            {
                                let sent =
                                    u64::from_le_bytes(r.body[8..16].try_into().unwrap_or([0; 8]));
                                let now = now_ns();
                                let _ = latency.record(now.saturating_sub(sent).max(1));
                                if *count == 0 && first == 0 {
                                    first = now;
                                }
                                last = now;
                                *count += 1;
                            }
                        })?;
                    }
                }
                progress.store(
                    delivered.iter().copied().min().unwrap_or(0),
                    Ordering::Relaxed,
                );
            }
            Ok(Outcome {
                latency,
                recovery,
                sent: 0,
                delivered: delivered.iter().copied().min().unwrap_or(0),
                elapsed_ns: last.saturating_sub(first),
                retransmit_bytes: 0,
                dropped_bytes: group.iter().map(UdpReceiver::debug_dropped_bytes).sum(),
            })
        })
    };
    pin(0);
    let mut buf = [0u8; SIZE];
    // Warm-up: one record, and wait until the receiver has joined and made its replica
    // (mapping a large replica takes a while); it is not measured.
    buf[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    writer.append(RecordKind::APPLICATION_FIRST, &buf)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !joined.load(Ordering::Acquire) {
        if Instant::now() > deadline {
            done.store(true, Ordering::Relaxed);
            bail!("the receiver did not join");
        }
        sender.poll()?;
        std::thread::sleep(Duration::from_micros(100));
    }
    std::thread::sleep(Duration::from_millis(20));
    let mut next = now_ns();
    for i in 0..records {
        buf[..8].copy_from_slice(&i.to_le_bytes());
        if pace_ns > 0 {
            spin_until(next);
            next += pace_ns;
        }
        buf[8..16].copy_from_slice(&now_ns().to_le_bytes());
        writer.append(RecordKind::APPLICATION_FIRST, &buf)?;
        if pace_ns > 0 {
            sender.poll()?;
        } else if i % 64 == 63 {
            // Flat out, but never more than a quarter ring ahead of the sender: the ring
            // would otherwise lap it (and the benchmark would measure loss, not speed).
            sender.poll()?;
            while sender.lag_bytes() > 32 << 20
                || i.saturating_sub(progress.load(Ordering::Relaxed)) > RECEIVER_WINDOW
            {
                sender.poll()?;
            }
        }
    }
    drop(writer);
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut closing = false;
    while !sender.is_closed() {
        if Instant::now() > deadline {
            done.store(true, Ordering::Relaxed);
            bail!("sender did not finish");
        }
        sender.poll()?;
        if !closing && !sender.has_work() {
            closing = true;
            sender.close();
        }
    }
    let mut outcome = receiving
        .join()
        .map_err(|_| anyhow!("receiver thread panicked"))??;
    outcome.sent = records;
    outcome.retransmit_bytes = sender
        .stats()
        .first()
        .map_or(0, |s| s.counters.retransmit_bytes);
    if outcome.delivered != records {
        bail!("{} of {records} records arrived", outcome.delivered);
    }
    Ok(outcome)
}

fn shm_root() -> &'static Path {
    if Path::new("/dev/shm").is_dir() {
        Path::new("/dev/shm")
    } else {
        Path::new("/tmp")
    }
}

/// One-way latency of a bare datagram on loopback, both ends busy-polling.
fn raw_floor(count: u64) -> Result<Latency> {
    let rx = UdpSocket::bind("127.0.0.1:0")?;
    rx.set_nonblocking(true)?;
    let to = rx.local_addr()?;
    let tx = UdpSocket::bind("127.0.0.1:0")?;
    // Plain UDP has no repair: a datagram the kernel drops (a descheduled receiver, a
    // full buffer) never comes, so the receiver stops a second after the last send.
    let sent_all = Arc::new(AtomicBool::new(false));
    let sender_done = Arc::clone(&sent_all);
    let receiving = std::thread::spawn(move || -> Result<Latency> {
        pin(1);
        let mut hist = histogram();
        let mut buf = [0u8; 1500];
        let mut deadline = Instant::now() + Duration::from_secs(120);
        let mut grace_started = false;
        while hist.len() < count {
            if !grace_started && sent_all.load(Ordering::Acquire) {
                grace_started = true;
                deadline = deadline.min(Instant::now() + Duration::from_secs(1));
            }
            match rx.recv(&mut buf) {
                Ok(n) if n >= 16 => {
                    let sent = u64::from_le_bytes(buf[8..16].try_into().unwrap_or([0; 8]));
                    let _ = hist.record(now_ns().saturating_sub(sent).max(1));
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        break;
                    }
                }
                Err(e) => return Err(e).context("floor receive"),
            }
        }
        Ok(Latency::of(&hist))
    });
    pin(0);
    std::thread::sleep(Duration::from_millis(10));
    let mut buf = [0u8; SIZE];
    let mut next = now_ns();
    for i in 0..count {
        spin_until(next);
        next += PACE_NS;
        buf[..8].copy_from_slice(&i.to_le_bytes());
        buf[8..16].copy_from_slice(&now_ns().to_le_bytes());
        tx.send_to(&buf, to)?;
    }
    sender_done.store(true, Ordering::Release);
    receiving
        .join()
        .map_err(|_| anyhow!("floor receiver panicked"))?
}

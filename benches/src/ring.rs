//! `mdbench ring`: one-way latency and throughput of the ring log against iceoryx2,
//! tokio's broadcast channel, a crossbeam channel, and a raw cache-line floor.
//!
//! Every message starts with `[index u64][send time u64]` (CLOCK_MONOTONIC ns), padded to
//! `size` payload bytes; index `u64::MAX` ends a run. The writer is pinned to core 0 and
//! every reader to core 1 (this is a 2-core machine: readers beyond the first share it
//! and yield when idle). Latency runs are paced (one message every `interval`), so they
//! measure delivery, not queueing; throughput runs go flat out.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use mdi_protocol::records::RecordKind;
use mdi_protocol::ring::{ReadEvent, RingOptions, RingReader, RingWriter, ShmDir, StartAt};

use crate::harness::{
    Latency, ResultLine, Role, await_command, cores, field, histogram, now_ns, pin, report,
    spin_until,
};

const KIND: RecordKind = RecordKind::APPLICATION_FIRST;
const END: u64 = u64::MAX;
const WRITER_CORE: usize = 0;
const READER_CORE: usize = 1;

/// What `mdbench ring` runs.
#[derive(Debug, Clone)]
pub struct RingBench {
    pub quick: bool,
    /// Overrides the message counts (latency, throughput), for smoke tests.
    pub messages: Option<(u64, u64)>,
    pub sizes: Vec<usize>,
    pub readers: Vec<usize>,
    pub impls: Vec<String>,
    /// Data-region bytes of the mdi ring under test.
    pub ring_capacity: u64,
}

impl RingBench {
    fn latency_messages(&self) -> u64 {
        match self.messages {
            Some((latency, _)) => latency,
            None if self.quick => 20_000,
            None => 200_000,
        }
    }

    fn throughput_messages(&self) -> u64 {
        match self.messages {
            Some((_, throughput)) => throughput,
            None if self.quick => 2_000_000,
            None => 20_000_000,
        }
    }

    fn wants(&self, implementation: &str) -> bool {
        self.impls.is_empty() || self.impls.iter().any(|i| i == implementation)
    }
}

/// Latency runs send a message every 5 µs.
const INTERVAL_NS: u64 = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Latency,
    Throughput,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Latency => "latency",
            Self::Throughput => "throughput",
        }
    }

    fn parse(text: &str) -> Result<Self> {
        match text {
            "latency" => Ok(Self::Latency),
            "throughput" => Ok(Self::Throughput),
            other => Err(anyhow!("unknown mode {other}")),
        }
    }
}

pub fn run(bench: &RingBench) -> Result<()> {
    let base = shm_base()?;
    println!(
        "# mdbench ring: {} cores; writer on core {WRITER_CORE}, readers on core {READER_CORE}; shm {}",
        cores(),
        base.path().display()
    );
    if bench.wants("floor") {
        let latency = floor_latency(bench.latency_messages())?;
        ResultLine::new("ring-latency", "floor")
            .field("size", 64)
            .field("readers", 1)
            .latency(latency)
            .print();
    }
    for mode in [Mode::Latency, Mode::Throughput] {
        for &size in &bench.sizes {
            for &readers in &bench.readers {
                let count = match mode {
                    Mode::Latency => bench.latency_messages(),
                    Mode::Throughput => bench.throughput_messages(),
                };
                let run = Run {
                    mode,
                    size,
                    readers,
                    count,
                    ring_capacity: bench.ring_capacity,
                };
                if bench.wants("mdi") {
                    run.report("mdi", run_processes(&run, base.path(), "mdi")?);
                }
                if bench.wants("iceoryx2") {
                    #[cfg(feature = "iceoryx2")]
                    run.report("iceoryx2", run_processes(&run, base.path(), "iox")?);
                    #[cfg(not(feature = "iceoryx2"))]
                    println!("# iceoryx2 peer not built: build mdbench with --features iceoryx2");
                }
                if bench.wants("tokio-broadcast") {
                    run.report("tokio-broadcast", in_process(&run, Channel::Tokio)?);
                }
                if bench.wants("crossbeam") {
                    run.report("crossbeam", in_process(&run, Channel::Crossbeam)?);
                }
            }
        }
    }
    Ok(())
}

fn shm_base() -> Result<tempfile::TempDir> {
    let dev_shm = Path::new("/dev/shm");
    let dir = if dev_shm.is_dir() {
        tempfile::Builder::new()
            .prefix("mdbench-")
            .tempdir_in(dev_shm)
    } else {
        tempfile::tempdir()
    };
    dir.context("creating a scratch shm directory")
}

#[derive(Debug, Clone, Copy)]
struct Run {
    mode: Mode,
    size: usize,
    readers: usize,
    count: u64,
    ring_capacity: u64,
}

/// What a run measured.
#[derive(Debug, Clone, Copy, Default)]
struct Outcome {
    latency: Latency,
    writer_msgs_per_s: f64,
    /// The slowest reader's delivery rate, first to last message.
    reader_msgs_per_s: f64,
    lost: u64,
}

impl Run {
    fn report(&self, implementation: &str, outcome: Outcome) {
        match self.mode {
            Mode::Latency => ResultLine::new("ring-latency", implementation)
                .field("size", self.size)
                .field("readers", self.readers)
                .latency(outcome.latency)
                .field("lost", outcome.lost)
                .print(),
            Mode::Throughput => ResultLine::new("ring-throughput", implementation)
                .field("size", self.size)
                .field("readers", self.readers)
                .field("msgs_per_s", format!("{:.0}", outcome.writer_msgs_per_s))
                .field(
                    "reader_msgs_per_s",
                    format!("{:.0}", outcome.reader_msgs_per_s),
                )
                .field("lost", outcome.lost)
                .print(),
        }
    }
}

/// Runs the writer and readers as separate processes for the mdi ring or iceoryx2.
fn run_processes(run: &Run, base: &Path, flavour: &str) -> Result<Outcome> {
    static RUN_ID: AtomicU64 = AtomicU64::new(0);
    let id = RUN_ID.fetch_add(1, Ordering::Relaxed);
    let target = match flavour {
        "mdi" => base.join(format!("run{id}")).display().to_string(),
        _ => format!("mdbench/{}/{id}", std::process::id()),
    };
    let mut writer = Role::spawn(&[
        format!("{flavour}-writer"),
        target.clone(),
        run.size.to_string(),
        run.mode.name().into(),
        run.count.to_string(),
        run.ring_capacity.to_string(),
    ])?;
    writer.expect("ready")?;
    let shared_core = run.readers > 1;
    let mut readers = Vec::new();
    for _ in 0..run.readers {
        let mut reader = Role::spawn(&[
            format!("{flavour}-reader"),
            target.clone(),
            run.mode.name().into(),
            u8::from(shared_core).to_string(),
        ])?;
        reader.expect("ready")?;
        readers.push(reader);
    }
    writer.send("go")?;
    let done = writer.expect("done")?;
    let writer_msgs_per_s = field(&done, "msgs_per_s")? as f64;
    let mut outcome = Outcome {
        writer_msgs_per_s,
        ..Outcome::default()
    };
    let mut first = true;
    for mut reader in readers {
        let line = reader.expect("done")?;
        outcome.lost += field(&line, "lost")?;
        let rate = field(&line, "rate")? as f64;
        outcome.reader_msgs_per_s = if first {
            rate
        } else {
            outcome.reader_msgs_per_s.min(rate)
        };
        if run.mode == Mode::Latency {
            let latency = Latency::parse(&line)?;
            outcome.latency = if first {
                latency
            } else {
                outcome.latency.worst(latency)
            };
            first = false;
        }
        reader.finish()?;
    }
    writer.finish()?;
    if flavour == "mdi" {
        let _ = std::fs::remove_dir_all(&target);
    }
    Ok(outcome)
}

/// Child roles: `mdi-writer`, `mdi-reader`, `iox-writer`, `iox-reader`.
pub fn child(args: &[String]) -> Result<()> {
    let arg = |i: usize| -> Result<&str> {
        args.get(i)
            .map(String::as_str)
            .with_context(|| format!("missing child argument {i}"))
    };
    match arg(0)? {
        "itch-rx-send" => crate::itch_rx::send(arg(1)?.parse()?, arg(2)?.parse()?),
        "itch-rx-receive" => crate::itch_rx::receive(arg(1)?, arg(2)?.parse()?),
        "mdi-writer" => {
            let size: usize = arg(2)?.parse()?;
            writer_loop(
                &mut MdiSender::create(Path::new(arg(1)?), arg(5)?.parse()?)?,
                size,
                Mode::parse(arg(3)?)?,
                arg(4)?.parse()?,
            )
        }
        "mdi-reader" => reader_loop(
            &mut MdiReceiver::open(Path::new(arg(1)?))?,
            Mode::parse(arg(2)?)?,
            arg(3)? == "1",
        ),
        #[cfg(feature = "iceoryx2")]
        "iox-writer" => {
            let size: usize = arg(2)?.parse()?;
            let mut sender = crate::iox::Sender::create(arg(1)?, size)?;
            writer_loop(&mut sender, size, Mode::parse(arg(3)?)?, arg(4)?.parse()?)
        }
        #[cfg(feature = "iceoryx2")]
        "iox-reader" => reader_loop(
            &mut crate::iox::Receiver::open(arg(1)?)?,
            Mode::parse(arg(2)?)?,
            arg(3)? == "1",
        ),
        other => Err(anyhow!("unknown child role {other}")),
    }
}

/// The sending side of a transport under test.
pub trait Send {
    fn send(&mut self, message: &[u8]) -> Result<()>;
}

/// The receiving side: calls `on_message` for each message, returns how many; counts losses.
pub trait Receive {
    fn poll(&mut self, on_message: &mut dyn FnMut(&[u8])) -> Result<usize>;
    fn lost(&self) -> u64;
}

fn stamp(buf: &mut [u8], index: u64, at: u64) {
    buf[..8].copy_from_slice(&index.to_le_bytes());
    buf[8..16].copy_from_slice(&at.to_le_bytes());
}

fn read_stamp(message: &[u8]) -> (u64, u64) {
    let word =
        |k: usize| u64::from_le_bytes(message[k * 8..k * 8 + 8].try_into().unwrap_or([0; 8]));
    (word(0), word(1))
}

fn writer_loop(sender: &mut dyn Send, size: usize, mode: Mode, count: u64) -> Result<()> {
    pin(WRITER_CORE);
    let mut buf = vec![0u8; size.max(16)];
    report("ready");
    await_command("go")?;
    let start = now_ns();
    match mode {
        Mode::Latency => {
            for i in 0..count {
                let t = now_ns();
                stamp(&mut buf, i, t);
                sender.send(&buf)?;
                spin_until(t + INTERVAL_NS);
            }
        }
        Mode::Throughput => {
            for i in 0..count {
                buf[..8].copy_from_slice(&i.to_le_bytes());
                sender.send(&buf)?;
            }
        }
    }
    let elapsed = now_ns() - start;
    stamp(&mut buf, END, now_ns());
    sender.send(&buf)?;
    let rate = count as f64 * 1e9 / elapsed.max(1) as f64;
    report(&format!("done msgs_per_s={rate:.0}"));
    // Stay until the parent has collected the readers (the ring must outlive them).
    let _ = await_command("exit");
    Ok(())
}

/// Messages a reader delivered, first to last.
#[derive(Debug, Default)]
struct DeliveryRate {
    count: u64,
    first_ns: u64,
    last_ns: u64,
}

impl DeliveryRate {
    /// Counts one message; reads the clock every 1024 messages only.
    #[inline]
    fn delivered(&mut self) {
        if self.count == 0 {
            self.first_ns = now_ns();
        }
        self.count += 1;
        if self.count.is_multiple_of(1024) {
            self.last_ns = now_ns();
        }
    }

    fn per_second(&self) -> f64 {
        let elapsed = self.last_ns.saturating_sub(self.first_ns);
        if elapsed == 0 {
            return 0.0;
        }
        // Messages up to the last clock reading.
        (self.count - self.count % 1024) as f64 * 1e9 / elapsed as f64
    }
}

fn reader_loop(receiver: &mut dyn Receive, mode: Mode, shared_core: bool) -> Result<()> {
    pin(READER_CORE);
    let mut hist = histogram();
    report("ready");
    let mut done = false;
    let mut idle_spins = 0u64;
    let mut rate = DeliveryRate::default();
    while !done {
        let n = receiver.poll(&mut |message| {
            let (index, sent) = read_stamp(message);
            if index == END {
                done = true;
            } else if mode == Mode::Latency {
                let _ = hist.record(now_ns().saturating_sub(sent).max(1));
            } else {
                rate.delivered();
            }
        })?;
        if n == 0 {
            idle_spins += 1;
            if shared_core {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
            // Bounded: a run that stalls for ~minutes of spinning is a failure, not a hang.
            if idle_spins > 20_000_000_000 {
                return Err(anyhow!("reader saw no end of run"));
            }
        }
    }
    report(&format!(
        "done {} lost={} rate={:.0}",
        Latency::of(&hist).report(),
        receiver.lost(),
        rate.per_second()
    ));
    Ok(())
}

struct MdiSender {
    writer: RingWriter,
}

impl MdiSender {
    fn create(dir: &Path, capacity: u64) -> Result<Self> {
        let shm = ShmDir::new(dir);
        let writer = RingWriter::create(&shm, "bench", &RingOptions::default().capacity(capacity))
            .context("creating the benchmark ring")?;
        Ok(Self { writer })
    }
}

impl Send for MdiSender {
    #[inline]
    fn send(&mut self, message: &[u8]) -> Result<()> {
        self.writer.append(KIND, message)?;
        Ok(())
    }
}

struct MdiReceiver {
    reader: RingReader,
    lost: u64,
}

impl MdiReceiver {
    fn open(dir: &Path) -> Result<Self> {
        let reader = RingReader::open(&ShmDir::new(dir), "bench", StartAt::Latest)
            .context("opening the benchmark ring")?;
        Ok(Self { reader, lost: 0 })
    }
}

impl Receive for MdiReceiver {
    #[inline]
    fn poll(&mut self, on_message: &mut dyn FnMut(&[u8])) -> Result<usize> {
        let lost = &mut self.lost;
        let n = self.reader.poll(256, |event| match event {
            ReadEvent::Record(record) => on_message(record.body),
            ReadEvent::Lost { .. } => *lost += event.lost_count(),
            ReadEvent::EpochStarted { .. } => {}
        })?;
        Ok(n)
    }

    fn lost(&self) -> u64 {
        self.lost
    }
}

/// One-way latency of a single cache line between two pinned threads: the floor any
/// shared-memory transport pays.
fn floor_latency(count: u64) -> Result<Latency> {
    #[repr(align(128))]
    struct Line {
        stamp: AtomicU64,
        index: AtomicU64,
    }
    let line = Arc::new(Line {
        stamp: AtomicU64::new(0),
        index: AtomicU64::new(0),
    });
    let reader_line = line.clone();
    let reader = std::thread::spawn(move || {
        pin(READER_CORE);
        let mut hist = histogram();
        let mut seen = 0;
        while seen < count {
            let index = reader_line.index.load(Ordering::Acquire);
            if index != seen {
                let sent = reader_line.stamp.load(Ordering::Relaxed);
                let _ = hist.record(now_ns().saturating_sub(sent).max(1));
                seen = index;
            } else {
                std::hint::spin_loop();
            }
        }
        Latency::of(&hist)
    });
    pin(WRITER_CORE);
    std::thread::sleep(Duration::from_millis(10));
    for i in 1..=count {
        let t = now_ns();
        line.stamp.store(t, Ordering::Relaxed);
        line.index.store(i, Ordering::Release);
        spin_until(t + INTERVAL_NS);
    }
    reader.join().map_err(|_| anyhow!("floor reader panicked"))
}

#[derive(Debug, Clone, Copy)]
enum Channel {
    Tokio,
    Crossbeam,
}

/// In-process peers: the writer thread on core 0, reader threads on core 1.
fn in_process(run: &Run, channel: Channel) -> Result<Outcome> {
    match run.size {
        64 => in_process_sized::<64>(run, channel),
        256 => in_process_sized::<256>(run, channel),
        1024 => in_process_sized::<1024>(run, channel),
        other => Err(anyhow!(
            "in-process peers support sizes 64, 256, 1024, not {other}"
        )),
    }
}

/// The writer side of an in-process peer.
type SendFn<const N: usize> = Box<dyn FnMut(&[u8; N]) -> Result<()> + std::marker::Send>;

fn in_process_sized<const N: usize>(run: &Run, channel: Channel) -> Result<Outcome> {
    let capacity = 4096;
    let ready = Arc::new(AtomicU64::new(0));
    let shared_core = run.readers > 1;
    let mode = run.mode;
    let mut handles = Vec::new();
    let mut send: SendFn<N> = match channel {
        Channel::Tokio => {
            let (tx, _) = tokio::sync::broadcast::channel::<[u8; N]>(capacity);
            for _ in 0..run.readers {
                let mut rx = tx.subscribe();
                let ready = ready.clone();
                handles.push(std::thread::spawn(move || {
                    let mut lost = 0u64;
                    channel_reader(&ready, mode, shared_core, || match rx.try_recv() {
                        Ok(message) => Some(message),
                        Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => {
                            lost += n;
                            None
                        }
                        Err(_) => None,
                    })
                    .map(|(latency, rate)| (latency, rate, lost))
                }));
            }
            Box::new(move |message| {
                tx.send(*message).map_err(|_| anyhow!("no receivers"))?;
                Ok(())
            })
        }
        Channel::Crossbeam => {
            let mut senders = Vec::new();
            for _ in 0..run.readers {
                let (tx, rx) = crossbeam_channel::bounded::<[u8; N]>(capacity);
                senders.push(tx);
                let ready = ready.clone();
                handles.push(std::thread::spawn(move || {
                    channel_reader(&ready, mode, shared_core, || rx.try_recv().ok())
                        .map(|(latency, rate)| (latency, rate, 0))
                }));
            }
            Box::new(move |message| {
                for tx in &senders {
                    tx.send(*message).map_err(|_| anyhow!("receiver gone"))?;
                }
                Ok(())
            })
        }
    };
    while ready.load(Ordering::Acquire) < run.readers as u64 {
        std::thread::yield_now();
    }
    let writer = std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<f64> {
                pin(WRITER_CORE);
                let mut buf = [0u8; N];
                let start = now_ns();
                for i in 0..run.count {
                    match run.mode {
                        Mode::Latency => {
                            let t = now_ns();
                            stamp(&mut buf, i, t);
                            send(&buf)?;
                            spin_until(t + INTERVAL_NS);
                        }
                        Mode::Throughput => {
                            buf[..8].copy_from_slice(&i.to_le_bytes());
                            send(&buf)?;
                        }
                    }
                }
                let elapsed = now_ns() - start;
                stamp(&mut buf, END, now_ns());
                send(&buf)?;
                Ok(run.count as f64 * 1e9 / elapsed.max(1) as f64)
            })
            .join()
    });
    let writer_msgs_per_s = writer.map_err(|_| anyhow!("writer thread panicked"))??;
    let mut outcome = Outcome {
        writer_msgs_per_s,
        ..Outcome::default()
    };
    for (i, handle) in handles.into_iter().enumerate() {
        let (latency, rate, lost) = handle.join().map_err(|_| anyhow!("reader panicked"))??;
        outcome.lost += lost;
        if i == 0 {
            outcome.latency = latency;
            outcome.reader_msgs_per_s = rate;
        } else {
            outcome.latency = outcome.latency.worst(latency);
            outcome.reader_msgs_per_s = outcome.reader_msgs_per_s.min(rate);
        }
    }
    Ok(outcome)
}

/// Returns the latency histogram's figures and the delivery rate.
fn channel_reader<const N: usize>(
    ready: &AtomicU64,
    mode: Mode,
    shared_core: bool,
    mut next: impl FnMut() -> Option<[u8; N]>,
) -> Result<(Latency, f64)> {
    pin(READER_CORE);
    let mut hist = histogram();
    ready.fetch_add(1, Ordering::AcqRel);
    let mut idle_spins = 0u64;
    let mut rate = DeliveryRate::default();
    loop {
        match next() {
            Some(message) => {
                let (index, sent) = read_stamp(&message);
                if index == END {
                    break;
                }
                if mode == Mode::Latency {
                    let _ = hist.record(now_ns().saturating_sub(sent).max(1));
                } else {
                    rate.delivered();
                }
            }
            None => {
                idle_spins += 1;
                if idle_spins > 20_000_000_000 {
                    return Err(anyhow!("reader saw no end of run"));
                }
                if shared_core {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
        }
    }
    Ok((Latency::of(&hist), rate.per_second()))
}

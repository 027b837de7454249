//! `--archive DIR`: a recorder thread behind the rings (`ticks`, `klines`) that appends
//! every record to the tick archive. The writer never waits for it while live; a replay
//! at full speed waits ([`ArchiveGate::wait`]) when the recorder falls half a ring
//! behind, so that nothing is lost.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use mdi_archive::{Recorder, RecorderCounts, RecorderOptions};
use mdi_protocol::ring::{RingReader, ShmDir, StartAt};

/// The streams recorded.
const STREAMS: [&str; 2] = ["ticks", "klines"];

/// What a writer looks at to wait for the recorder (a no-op without an archive).
#[derive(Debug, Default)]
pub(crate) struct ArchiveGate {
    /// Recording (a recorder that stopped no longer holds anyone up).
    active: AtomicBool,
    /// Per stream: the position the recorder has read up to.
    archived: [AtomicU64; 2],
    /// Per stream: the most a replay lets it fall behind.
    limit: [AtomicU64; 2],
    /// Readers that only look at each ring's tail (where the writer is now).
    tails: std::sync::Mutex<Vec<RingReader>>,
}

impl ArchiveGate {
    /// Returns when the recorder is less than half a ring behind (at once without an
    /// archive, or once `stop` is set).
    pub(crate) fn wait(&self, stop: &AtomicBool) {
        // bounded: the recorder moves on, or stops (then `active` falls), or `stop`
        while self.active.load(Ordering::Acquire) && !stop.load(Ordering::Relaxed) && self.behind()
        {
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// The recorder is further behind a writer than the limit.
    fn behind(&self) -> bool {
        let tails = self
            .tails
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tails.iter().enumerate().any(|(i, reader)| {
            let written = reader.tail().0.0;
            written.saturating_sub(self.archived[i].load(Ordering::Acquire))
                > self.limit[i].load(Ordering::Relaxed)
        })
    }
}

/// Opens the recorders of the rings (before anything is written: the archive starts
/// at the rings' first record) and makes the gate watch them.
pub(crate) fn open(
    shm: &ShmDir,
    archive: &Path,
    capacities: [u64; 2],
    gate: &ArchiveGate,
) -> Result<Vec<Recorder>> {
    let recorders = STREAMS
        .iter()
        .map(|stream| {
            Recorder::open(shm, stream, archive, RecorderOptions::default())
                .with_context(|| format!("archiving {stream} into {}", archive.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let tails = STREAMS
        .iter()
        .map(|stream| RingReader::open_with(shm, stream, StartAt::Latest, false))
        .collect::<Result<Vec<_>, _>>()
        .context("watching the rings for the archive")?;
    *gate
        .tails
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = tails;
    for (i, recorder) in recorders.iter().enumerate() {
        gate.limit[i].store(capacities[i] / 2, Ordering::Relaxed);
        gate.archived[i].store(recorder.position(), Ordering::Release);
    }
    gate.active.store(true, Ordering::Release);
    Ok(recorders)
}

/// Records until `writing_done` is set and everything is archived; returns each
/// stream's counts. An error stops it (the writer goes on: a full disk must not stop
/// the feed) and is returned; the gate then holds nobody up.
pub(crate) fn record(
    shm: &ShmDir,
    recorders: Vec<Recorder>,
    gate: &ArchiveGate,
    writing_done: &AtomicBool,
) -> Result<Vec<(&'static str, RecorderCounts)>> {
    let result = run(shm, recorders, gate, writing_done);
    gate.active.store(false, Ordering::Release);
    result
}

fn run(
    shm: &ShmDir,
    mut recorders: Vec<Recorder>,
    gate: &ArchiveGate,
    writing_done: &AtomicBool,
) -> Result<Vec<(&'static str, RecorderCounts)>> {
    let mut status_at = std::time::Instant::now();
    loop {
        // read before polling: everything written before it is then archived below
        let done = writing_done.load(Ordering::Acquire);
        if status_at.elapsed() >= Duration::from_secs(1) {
            status_at = std::time::Instant::now();
            write_status(shm, &recorders);
        }
        let mut moved = 0;
        for (i, recorder) in recorders.iter_mut().enumerate() {
            moved += recorder
                .poll(1 << 16)
                .with_context(|| format!("archiving {}", STREAMS[i]))?;
            gate.archived[i].store(recorder.position(), Ordering::Release);
        }
        if moved == 0 {
            if done && recorders.iter().all(Recorder::caught_up) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    for stream in STREAMS {
        mdi_transport::status::remove(shm.path(), stream, "archive");
    }
    recorders
        .into_iter()
        .zip(STREAMS)
        .map(|(r, stream)| Ok((stream, r.close()?)))
        .collect()
}

/// Each recorder's status (`<shm dir>/<stream>.archive`, for mdstat and metrics).
fn write_status(shm: &ShmDir, recorders: &[Recorder]) {
    let now = mdi_transport::wall_clock_ns();
    for (recorder, stream) in recorders.iter().zip(STREAMS) {
        mdi_transport::status::write(shm.path(), stream, "archive", &recorder.status_lines(), now);
    }
}

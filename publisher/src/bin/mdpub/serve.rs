//! `mdpub serve`, and serving rings over UDP while another command writes them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::archive::ArchiveGate;
use crate::cli::*;
use anyhow::{Context, Result, bail};
use mdi_protocol::ring::{RingOptions, RingWriter, ShmDir};
use mdi_publisher::pipeline::Rings;
use mdi_transport::sender::{ServeUntil, UdpSender, UdpSenderOptions, serve};

impl Serving {
    pub(crate) fn senders(&self, streams: &[String]) -> Result<Vec<UdpSender>> {
        let options = UdpSenderOptions {
            linger: Duration::from_millis(self.linger_ms),
            debug_drop_rate: self.debug_drop_rate,
            debug_seed: self.debug_seed,
        };
        let shm = ShmDir::new(&self.shm_dir);
        self.channels
            .iter()
            .map(|channel| {
                UdpSender::new(*channel, &shm, streams, &options)
                    .with_context(|| format!("serving on {channel}"))
            })
            .collect()
    }
}

pub(crate) fn run_serve(args: &Serve) -> Result<()> {
    if args.serving.channels.is_empty() {
        bail!("nothing to serve on: give at least one --udp URI");
    }
    let shm = ShmDir::new(&args.serving.shm_dir);
    let _metrics = crate::start_metrics(&args.serving.shm_dir)?;
    let streams = if args.streams.is_empty() {
        shm.streams()
            .with_context(|| format!("listing rings in {}", shm.path().display()))?
    } else {
        args.streams.clone()
    };
    if streams.is_empty() {
        bail!(
            "no rings to serve in {} (is the publisher writing there?)",
            shm.path().display()
        );
    }
    let mut senders = args.serving.senders(&streams)?;
    let stop = interrupt_flag()?;
    eprintln!(
        "mdpub: serving {} on {}",
        streams.join(", "),
        channel_list(&senders)
    );
    serve(
        &mut senders,
        &stop,
        ServeUntil {
            duration: args.duration.map(Duration::from_secs_f64),
            writers_exit: args.until_writers_exit,
        },
    )?;
    report_senders(&senders);
    Ok(())
}

pub(crate) fn channel_list(senders: &[UdpSender]) -> String {
    senders
        .iter()
        .map(|s| s.channel().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn report_senders(senders: &[UdpSender]) {
    for sender in senders {
        for mdi_transport::sender::StreamStats {
            stream,
            counters,
            receivers,
        } in sender.stats()
        {
            eprintln!(
                "mdpub: {} {stream}: {} data frames ({} bytes), {} retransmitted ({} bytes), {} NAKs ({} coalesced, {} refused), {} unavailable, flow control waited {} times, {} receivers, {} with a bad tag refused, {} dropped by the loss generator",
                sender.channel(),
                counters.data_frames,
                counters.data_bytes,
                counters.retransmit_frames,
                counters.retransmit_bytes,
                counters.naks,
                counters.naks_coalesced,
                counters.naks_refused,
                counters.unavailable,
                counters.flow_blocked,
                receivers.len(),
                sender.bad_tags(),
                sender.debug_dropped(),
            );
        }
    }
}

/// Creates the `ticks` and `klines` rings, runs `job` on them while the senders of
/// `serving` serve them and (with `--archive`) a recorder archives them, each on a
/// thread of its own, and returns when the job is done, the senders have ended (linger,
/// END) and the archive holds everything. `job` gets the archive's gate: a replay waits
/// there for the recorder; a live feed never does.
pub(crate) fn write_and_serve<T: Send>(
    serving: &Serving,
    (ticks, klines): (&RingOptions, &RingOptions),
    stop: &AtomicBool,
    job: impl FnOnce(Rings, &ArchiveGate) -> Result<T> + Send,
) -> Result<(T, Vec<UdpSender>)> {
    let shm = ShmDir::new(&serving.shm_dir);
    let _metrics = crate::start_metrics(&serving.shm_dir)?;
    let rings = Rings {
        ticks: RingWriter::create(&shm, "ticks", ticks).context("creating ring ticks")?,
        klines: RingWriter::create(&shm, "klines", klines).context("creating ring klines")?,
    };
    let capacities = [rings.ticks.capacity(), rings.klines.capacity()];
    let gate = ArchiveGate::default();
    let mut senders = serving.senders(&["ticks".to_owned(), "klines".to_owned()])?;
    if senders.is_empty() && serving.archive.is_none() {
        return Ok((job(rings, &gate)?, senders));
    }
    if !senders.is_empty() {
        eprintln!("mdpub: serving ticks, klines on {}", channel_list(&senders));
    }
    let writing_done = AtomicBool::new(false);
    let recorders = match &serving.archive {
        Some(dir) => {
            eprintln!("mdpub: archiving ticks, klines into {}", dir.display());
            Some(crate::archive::open(&shm, dir, capacities, &gate)?)
        }
        None => None,
    };
    let result = std::thread::scope(|scope| {
        let archiving = recorders.map(|recorders| {
            let (shm, gate, writing_done) = (&shm, &gate, &writing_done);
            scope.spawn(move || crate::archive::record(shm, recorders, gate, writing_done))
        });
        let writing = scope.spawn(|| {
            let result = job(rings, &gate);
            writing_done.store(true, Ordering::Release);
            result
        });
        let served = if senders.is_empty() {
            Ok(())
        } else {
            serve(
                &mut senders,
                stop,
                ServeUntil {
                    duration: None,
                    writers_exit: true,
                },
            )
        };
        let result = writing
            .join()
            .map_err(|_| anyhow::anyhow!("the writing thread panicked"))?;
        if let Some(archiving) = archiving {
            match archiving.join() {
                Ok(Ok(counts)) => {
                    for (stream, c) in counts {
                        eprintln!(
                            "mdpub: archived {stream}: {} records, {} gaps ({} records lost), {} segments begun",
                            c.records, c.gaps, c.lost, c.segments
                        );
                    }
                }
                // the feed went on; the archive's failure is said, and is the exit status
                Ok(Err(e)) => return Err(e.context("the archive stopped")),
                Err(_) => anyhow::bail!("the archiving thread panicked"),
            }
        }
        served?;
        result
    })?;
    Ok((result, senders))
}

/// Set by SIGINT or SIGTERM: every command stops cleanly on either.
pub(crate) fn interrupt_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    Ok(stop)
}

//! History and live as one stream: a 1 MiB ring wraps dozens of times while a recorder
//! archives it; a subscriber from the earliest record reads the archive, moves onto the
//! live ring by sequence, goes back to the archive when the ring laps it, and sees every
//! record once, in order, with no loss. A start by sequence or time in history works
//! the same; what neither holds is an exact `Lost`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mdi_archive::{Fsync, Recorder, RecorderOptions};
use mdi_protocol::records::Trade;
use mdi_protocol::ring::{RingOptions, RingWriter, ShmDir};
use mdi_subscriber::{Event, Record, Subscriber};

fn trade(n: u64) -> Trade {
    Trade {
        instrument_id: 1,
        price: 1_000_000 + n as i64,
        qty: 1,
        venue_seq: n,
        ts_publish_ns: 1_700_000_000_000_000_000 + n as i64 * 1000,
        ..Trade::default()
    }
}

fn recorder_thread(
    shm: ShmDir,
    archive: std::path::PathBuf,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let options = RecorderOptions {
            segment_bytes: 1 << 20,
            fsync: Fsync::None,
            ..RecorderOptions::default()
        };
        let mut r = Recorder::open(&shm, "ticks", &archive, options).unwrap();
        loop {
            let n = r.poll(1 << 16).unwrap();
            if n == 0 {
                if stop.load(Ordering::Relaxed) && r.caught_up() {
                    break;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        r.close().unwrap().lost
    })
}

#[test]
fn a_subscriber_from_the_earliest_reads_history_into_live_through_a_wrapping_ring() {
    let dir = tempfile::tempdir().unwrap();
    let shm = ShmDir::new(dir.path().join("shm"));
    let archive = dir.path().join("archive");
    let mut w = RingWriter::create(
        &shm,
        "ticks",
        &RingOptions::default().capacity(1 << 20).prefault(false),
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let recorder = recorder_thread(shm.clone(), archive.clone(), Arc::clone(&stop));
    let total = 300_000u64;
    let mut seqs = Vec::with_capacity(total as usize);
    // paced so that the recorder (its own thread) keeps up: 500 records a step
    let step = |w: &mut RingWriter, seqs: &mut Vec<u64>| {
        for _ in 0..500 {
            if (seqs.len() as u64) < total {
                let n = seqs.len() as u64;
                seqs.push(w.append_record(&trade(n)).unwrap().0);
            }
        }
        std::thread::sleep(Duration::from_micros(300));
    };
    // history: the 1 MiB ring (about 10 000 trades) wraps several times first
    while seqs.len() < 60_000 {
        step(&mut w, &mut seqs);
    }
    let mut subscriber = Subscriber::builder()
        .shm_dir(shm.path())
        .stream("ticks")
        .archive(&archive)
        .from_earliest()
        .open()
        .unwrap();
    let mut got: Vec<u64> = Vec::new();
    let mut lost: Vec<(u64, u64)> = Vec::new();
    let started = Instant::now();
    let mut stalled = false;
    let accounted = |got: &Vec<u64>, lost: &Vec<(u64, u64)>| {
        got.len() as u64 + lost.iter().map(|l| l.1 - l.0).sum::<u64>()
    };
    while accounted(&got, &lost) < total {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "bounded: {} read",
            got.len()
        );
        step(&mut w, &mut seqs);
        // once, mid-way, the subscriber stalls while the ring laps it four times over
        if !stalled && got.len() > 150_000 {
            stalled = true;
            for _ in 0..80 {
                step(&mut w, &mut seqs);
            }
        }
        subscriber
            .poll(2000, |event| match event {
                Event::Record {
                    record: Record::Trade(_),
                    seq,
                    ..
                } => got.push(seq.0),
                Event::Lost {
                    from_seq, to_seq, ..
                } => lost.push((from_seq.0, to_seq.0)),
                _ => {}
            })
            .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let recorder_lost = recorder.join().unwrap();
    // every record delivered once, in order, or inside an exact Lost — and only what the
    // recorder itself could not archive is lost (nothing, when it kept up)
    let mut covered = got.clone();
    for (from, to) in &lost {
        covered.extend(*from..*to);
    }
    covered.sort_unstable();
    assert_eq!(covered, seqs, "each record delivered or lost, exactly once");
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order");
    assert_eq!(lost.iter().map(|l| l.1 - l.0).sum::<u64>(), recorder_lost);
    if recorder_lost > 0 {
        eprintln!("note: the recorder was lapped ({recorder_lost} records): a loaded machine");
    }
}

#[test]
fn a_start_in_history_by_sequence_or_time_and_what_neither_holds() {
    let dir = tempfile::tempdir().unwrap();
    let shm = ShmDir::new(dir.path().join("shm"));
    let archive = dir.path().join("archive");
    let mut w = RingWriter::create(
        &shm,
        "ticks",
        &RingOptions::default().capacity(1 << 16).prefault(false),
    )
    .unwrap();
    let options = RecorderOptions {
        segment_bytes: 1 << 20,
        fsync: Fsync::None,
        ..RecorderOptions::default()
    };
    let mut seqs = Vec::new();
    let mut r = Recorder::open(&shm, "ticks", &archive, options).unwrap();
    for n in 0..20_000 {
        seqs.push(w.append_record(&trade(n)).unwrap().0);
        if n % 100 == 0 {
            r.poll(1 << 16).unwrap();
        }
    }
    while r.poll(1 << 16).unwrap() > 0 {}
    // sequence 5 000 and the time of record 7 000 are long gone from the 64 KiB ring
    let read = |builder: mdi_subscriber::SubscriberBuilder, want: usize| {
        let mut s = builder
            .shm_dir(shm.path())
            .stream("ticks")
            .archive(&archive)
            .open()
            .unwrap();
        let mut got = Vec::new();
        let mut lost = Vec::new();
        let started = Instant::now();
        while got.len() < want && started.elapsed() < Duration::from_secs(30) {
            s.poll(1000, |event| match event {
                Event::Record {
                    record: Record::Trade(t),
                    seq,
                    ..
                } => got.push((seq.0, t.venue_seq)),
                Event::Lost {
                    from_seq, to_seq, ..
                } => lost.push((from_seq.0, to_seq.0)),
                _ => {}
            })
            .unwrap();
        }
        (got, lost)
    };
    let (got, lost) = read(
        Subscriber::builder().from_sequence(mdi_protocol::ring::Seq(seqs[5000])),
        15_000,
    );
    assert!(lost.is_empty());
    assert_eq!(got.first(), Some(&(seqs[5000], 5000)));
    assert!(got.iter().map(|g| g.1).eq(5000..20_000));
    let (got, _) = read(
        Subscriber::builder().from_time(trade(7000).ts_publish_ns),
        13_000,
    );
    assert!(got.iter().map(|g| g.1).eq(7000..20_000));

    // the recorder stops; the ring moves on: where the archive ends and the ring begins
    // is an exact loss (after the grace the subscriber gives a recorder)
    drop(r);
    for n in 20_000..30_000 {
        seqs.push(w.append_record(&trade(n)).unwrap().0);
    }
    let (got, lost) = read(
        Subscriber::builder().from_sequence(mdi_protocol::ring::Seq(seqs[19_990])),
        10 + 300,
    );
    assert_eq!(
        got[..10].iter().map(|g| g.1).collect::<Vec<_>>(),
        (19_990..20_000).collect::<Vec<_>>()
    );
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(lost[0].0, seqs[20_000]);
    let resumed = got[10].0;
    assert_eq!(
        lost[0].1, resumed,
        "the loss ends where the ring's records begin"
    );
}

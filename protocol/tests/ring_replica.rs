//! Replication through the ring API alone: raw reads from a source ring, raw appends to a
//! replica. The replica must hold the same records at the same positions with the same
//! sequence numbers — across wraps, source writer restarts and unrecoverable gaps.

use mdi_protocol::records::RecordKind;
use mdi_protocol::ring::{
    Position, RawRead, ReadEvent, RecordHeader, ReplicaWriter, RingOptions, RingReader, RingWriter,
    Seq, ShmDir, StartAt, align_record,
};
use zerocopy::FromBytes;

const APP: RecordKind = RecordKind::APPLICATION_FIRST;

fn body(i: u64, len: usize) -> Vec<u8> {
    (0..len).map(|k| i.to_le_bytes()[k % 8] ^ k as u8).collect()
}

/// A record as seen by a reader: (position, seq, kind, body).
type Seen = (u64, u64, u16, Vec<u8>);

/// Every record a reader sees from `start`, plus losses.
fn contents(shm: &ShmDir, name: &str, start: StartAt) -> (Vec<Seen>, Vec<(u64, u64)>) {
    let mut reader = RingReader::open(shm, name, start).unwrap();
    let mut records = Vec::new();
    let mut lost = Vec::new();
    loop {
        let n = reader
            .poll(64, |event| match event {
                ReadEvent::Record(r) => {
                    records.push((r.position.get(), r.seq.get(), r.kind.0, r.body.to_vec()))
                }
                ReadEvent::EpochStarted { seq, epoch, .. } => {
                    records.push((0, seq.get(), 1, epoch.to_le_bytes().to_vec()))
                }
                ReadEvent::Lost { from_seq, to_seq } => lost.push((from_seq.get(), to_seq.get())),
            })
            .unwrap();
        if n == 0 && reader.caught_up() {
            return (records, lost);
        }
    }
}

/// Appends the raw records of one read (starting at `at`) to the replica, each at its
/// position.
fn append_records(replica: &mut ReplicaWriter, mut at: u64, raw: &[u8]) {
    let mut offset = 0;
    while offset < raw.len() {
        let header = RecordHeader::read_from_prefix(&raw[offset..]).unwrap().0;
        let len = align_record(u64::from(header.len)) as usize;
        replica
            .append_raw(Position(at), &raw[offset..offset + len])
            .unwrap();
        offset += len;
        at += len as u64;
    }
}

/// A source ring, a reader of it, and a replica of the same capacity, in fresh dirs.
struct Pair {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    src: ShmDir,
    dst: ShmDir,
    writer: RingWriter,
    source: RingReader,
    replica: ReplicaWriter,
}

fn pair() -> Pair {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let src = ShmDir::new(dirs.0.path());
    let dst = ShmDir::new(dirs.1.path());
    let options = RingOptions::default().capacity(1 << 16);
    let writer = RingWriter::create(&src, "ticks", &options).unwrap();
    let source = RingReader::open(&src, "ticks", StartAt::Earliest).unwrap();
    let replica = ReplicaWriter::create(&dst, "ticks", &options, 9).unwrap();
    Pair {
        _dirs: dirs,
        src,
        dst,
        writer,
        source,
        replica,
    }
}

/// Copies the source's stream from `from` to its end into the replica; returns where it
/// stopped. Each raw read is split into records and appended at their positions.
fn replicate(
    source: &mut RingReader,
    replica: &mut ReplicaWriter,
    mut from: u64,
    max_bytes: usize,
) -> u64 {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match source.read_raw(Position(from), max_bytes, &mut buf) {
            RawRead::Records { next_position } => {
                append_records(replica, from, &buf);
                from = next_position;
            }
            RawRead::Skip { next_position } => from = next_position,
            RawRead::Empty => return from,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn a_replica_holds_the_same_records_at_the_same_positions() {
    let Pair {
        _dirs,
        src,
        dst,
        mut writer,
        mut source,
        mut replica,
    } = pair();
    let options = RingOptions::default().capacity(1 << 16);
    let mut from = 0;
    // Wraps the 64 KiB ring a few times (the replica reader follows along).
    let mut replica_reader = RingReader::open(&dst, "ticks", StartAt::Earliest).unwrap();
    let mut seen = Vec::new();
    for round in 0..20u64 {
        for i in 0..100u64 {
            let n = round * 100 + i;
            writer.append(APP, &body(n, (n % 97) as usize)).unwrap();
        }
        from = replicate(&mut source, &mut replica, from, 1400);
        replica_reader
            .poll(usize::MAX, |e| {
                if let ReadEvent::Record(r) = e {
                    seen.push((r.position.get(), r.seq.get()));
                }
            })
            .unwrap();
        while !replica_reader.caught_up() {
            replica_reader
                .poll(usize::MAX, |e| {
                    if let ReadEvent::Record(r) = e {
                        seen.push((r.position.get(), r.seq.get()));
                    }
                })
                .unwrap();
        }
    }
    assert_eq!(seen.len(), 2000);
    // A restart of the source writer: its epoch record and padding replicate too.
    drop(writer);
    let mut writer = RingWriter::create(&src, "ticks", &options).unwrap();
    for i in 0..50u64 {
        writer.append(APP, &body(10_000 + i, 40)).unwrap();
    }
    replicate(&mut source, &mut replica, from, 1400);

    let (source_records, source_lost) = contents(&src, "ticks", StartAt::Earliest);
    let (replica_records, replica_lost) = contents(&dst, "ticks", StartAt::Earliest);
    assert!(source_lost.is_empty() && replica_lost.is_empty());
    // The replica's window starts where the source's does (same capacity).
    assert_eq!(replica_records, source_records);
    assert!(
        source_records.iter().any(|r| r.2 == 1),
        "an epoch record is in the window"
    );
    // Sequence seek works on the replica exactly as on the source.
    let last = source_records.last().unwrap().1;
    let mut r = RingReader::open(&dst, "ticks", StartAt::Sequence(Seq(last - 10))).unwrap();
    let mut first = None;
    r.poll(1, |e| {
        if let ReadEvent::Record(rec) = e {
            first = Some(rec.seq);
        }
    })
    .unwrap();
    assert_eq!(first.map(Seq::get), Some(last - 10u64));
}

#[test]
fn an_unrecoverable_gap_is_an_exact_loss_for_replica_readers() {
    let Pair {
        _dirs,
        dst,
        src: _,
        mut writer,
        mut source,
        mut replica,
    } = pair();
    let mut reader = RingReader::open(&dst, "ticks", StartAt::Earliest).unwrap();
    for i in 0..10u64 {
        writer.append(APP, &body(i, 24)).unwrap();
    }
    let from = replicate(&mut source, &mut replica, 0, 1400);
    let mut seqs = Vec::new();
    let mut lost = Vec::new();
    let drain = |reader: &mut RingReader, seqs: &mut Vec<u64>, lost: &mut Vec<(u64, u64)>| {
        while !reader.caught_up() {
            reader
                .poll(256, |e| match e {
                    ReadEvent::Record(r) => seqs.push(r.seq.get()),
                    ReadEvent::Lost { from_seq, to_seq } => {
                        lost.push((from_seq.get(), to_seq.get()))
                    }
                    ReadEvent::EpochStarted { seq, .. } => seqs.push(seq.get()),
                })
                .unwrap();
        }
    };
    drain(&mut reader, &mut seqs, &mut lost);
    assert_eq!(seqs, (0..11).collect::<Vec<_>>());
    // 2000 records (80 KB through a 64 KiB ring) the replica does not get in time: the
    // source overwrites the start of them, and says where it can resume.
    for i in 10..2010u64 {
        writer.append(APP, &body(i, 24)).unwrap();
    }
    let mut buf = Vec::new();
    let (resume_position, resume_seq) = match source.read_raw(Position(from), 1400, &mut buf) {
        RawRead::Unavailable {
            resume_position,
            resume_seq,
        } => (resume_position, resume_seq),
        other => panic!("expected Unavailable, got {other:?}"),
    };
    assert!(resume_seq > 11 && resume_seq < 2011);
    replica.skip_to(Position(resume_position), Seq(resume_seq));
    // The first frame's worth after the gap.
    let mut buf = Vec::new();
    let RawRead::Records { .. } = source.read_raw(Position(resume_position), 1400, &mut buf) else {
        panic!("records expected at the resume position");
    };
    append_records(&mut replica, resume_position, &buf);
    drain(&mut reader, &mut seqs, &mut lost);
    // Exactly the unrecoverable range is reported lost; the records after it follow.
    assert_eq!(lost, vec![(11, resume_seq)]);
    assert_eq!(seqs[11], resume_seq);
    assert_eq!(seqs.len(), 11 + 1400 / 40);
}

#[test]
fn raw_appends_that_do_not_fit_the_replica_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let shm = ShmDir::new(dir.path());
    let mut replica =
        ReplicaWriter::create(&shm, "r", &RingOptions::default().capacity(4096), 9).unwrap();
    let mut record = vec![0u8; 32];
    record[..4].copy_from_slice(&32u32.to_le_bytes());
    record[4..6].copy_from_slice(&APP.0.to_le_bytes());
    record[8..16].copy_from_slice(&5u64.to_le_bytes());
    assert!(
        replica.append_raw(Position(3), &record).is_err(),
        "unaligned position"
    );
    assert!(
        replica.append_raw(Position(4088), &record).is_err(),
        "across the region end"
    );
    assert!(
        replica.append_raw(Position(0), &record[..24]).is_err(),
        "length disagrees"
    );
    assert_eq!(replica.append_raw(Position(64), &record).unwrap(), 5);
    let err = replica.append_raw(Position(0), &record).unwrap_err();
    assert!(err.to_string().contains("behind the replica"), "{err}");
}

/// A replica keeps its source ring's id; a source writer never writes into a replica,
/// and a replica writer never into a ring that is not a replica of that source (issue
/// 19): the other source's replica is superseded, a source ring refused.
#[test]
fn replicas_know_their_source_and_the_roles_do_not_mix() {
    use mdi_protocol::ring::{WriterCreateError, WriterState, inspect};
    let dir = tempfile::tempdir().unwrap();
    let shm = ShmDir::new(dir.path());
    let options = RingOptions::default().capacity(4096);
    drop(ReplicaWriter::create(&shm, "r", &options, 77).unwrap());
    assert_eq!(inspect(&shm, "r").unwrap().source_ring_id, 77);
    let err = RingWriter::create(&shm, "r", &options).unwrap_err();
    assert!(matches!(err, WriterCreateError::WrongRole { .. }), "{err}");
    assert!(err.to_string().contains("replica"), "{err}");

    // the same source again: taken over; another source: the old replica superseded
    let same = ReplicaWriter::create(&shm, "r", &options, 77).unwrap();
    assert_eq!(same.source_ring_id(), 77);
    drop(same);
    let old = RingReader::open(&shm, "r", StartAt::Latest).unwrap();
    let other = ReplicaWriter::create(&shm, "r", &options, 78).unwrap();
    assert_eq!(other.source_ring_id(), 78);
    assert_eq!(old.writer_status(0).state, WriterState::Superseded);
    drop(other);

    drop(RingWriter::create(&shm, "s", &options).unwrap());
    assert_eq!(inspect(&shm, "s").unwrap().source_ring_id, 0);
    let err = ReplicaWriter::create(&shm, "s", &options, 77).unwrap_err();
    assert!(matches!(err, WriterCreateError::WrongRole { .. }), "{err}");
    assert!(err.to_string().contains("did not create"), "{err}");
}

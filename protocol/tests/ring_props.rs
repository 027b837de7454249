//! Property tests: arbitrary record sizes across the wrap, readers at arbitrary paces.

use mdi_protocol::records::RecordKind;
use mdi_protocol::ring::{ReadEvent, RingOptions, RingReader, RingWriter, Seq, ShmDir, StartAt};
use proptest::prelude::*;

/// Body of record `i`: `i` in every 8-byte word, truncated to `len`.
fn body(i: u64, len: usize) -> Vec<u8> {
    (0..len).map(|k| i.to_le_bytes()[k % 8]).collect()
}

#[derive(Debug, Clone)]
enum Step {
    Write { len: usize },
    Poll { max: usize },
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(
        prop_oneof![
            3 => (0usize..1000).prop_map(|len| Step::Write { len }),
            1 => (1usize..40).prop_map(|max| Step::Poll { max }),
        ],
        1..400,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever the sizes and the pace: every delivered record is intact and in order,
    /// and delivered + lost = written, exactly.
    #[test]
    fn delivered_plus_lost_is_written(steps in steps(), capacity_log2 in 12u32..15) {
        let dir = tempfile::tempdir().unwrap();
        let shm = ShmDir::new(dir.path());
        let mut writer = RingWriter::create(&shm, "p", &RingOptions::default().capacity(1 << capacity_log2)).unwrap();
        let mut reader = RingReader::open(&shm, "p", StartAt::Latest).unwrap();
        let first_seq = writer.next_seq().get();
        let mut lens = Vec::new();
        let mut next = first_seq;
        let mut lost = 0u64;
        let mut delivered = 0u64;
        let mut check = |reader: &mut RingReader, max: usize, lens: &Vec<usize>| -> Result<(), TestCaseError> {
            let mut failure = None;
            reader.poll(max, |event| match event {
                ReadEvent::Record(r) => {
                    if r.seq.get() != next {
                        failure = Some(format!("record {} while expecting {}", r.seq.get(), next));
                    }
                    let i = r.seq.get() - first_seq;
                    let len = lens[i as usize];
                    if r.body != body(i, len).as_slice() {
                        failure = Some(format!("record {} body mismatch", r.seq.get()));
                    }
                    next = r.seq.get() + 1;
                    delivered += 1;
                }
                ReadEvent::Lost { from_seq, to_seq } => {
                    if from_seq != next {
                        failure = Some(format!("loss from {from_seq} while expecting {next}"));
                    }
                    lost += to_seq - from_seq;
                    next = to_seq.get();
                }
                ReadEvent::EpochStarted { .. } => failure = Some("unexpected epoch".into()),
            }).unwrap();
            match failure {
                Some(f) => Err(TestCaseError::fail(f)),
                None => Ok(()),
            }
        };
        for step in steps {
            match step {
                Step::Write { len } => {
                    let i = lens.len() as u64;
                    lens.push(len);
                    writer.append(RecordKind::APPLICATION_FIRST, &body(i, len)).unwrap();
                }
                Step::Poll { max } => check(&mut reader, max, &lens)?,
            }
        }
        while !reader.caught_up() {
            check(&mut reader, 64, &lens)?;
        }
        prop_assert_eq!(delivered + lost, lens.len() as u64);
        // Any retained sequence can be sought directly.
        if let Some(last) = lens.len().checked_sub(1) {
            let seq = first_seq + last as u64;
            let mut reader = RingReader::open(&shm, "p", StartAt::Sequence(Seq(seq))).unwrap();
            let mut got = None;
            reader.poll(1, |e| if let ReadEvent::Record(r) = e { got = Some(r.seq.get()) }).unwrap();
            prop_assert_eq!(got, Some(seq));
        }
    }
}

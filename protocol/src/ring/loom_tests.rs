//! loom model of the claim/commit protocol: one writer wrapping a tiny ring while a
//! reader polls. Run with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p mdi-protocol --lib --release loom`.
//!
//! Every interleaving loom explores must deliver only untorn records (the body encodes
//! the sequence number in every word), in sequence order, and account for every sequence
//! it skipped as lost.

use super::log::{Geometry, HeapLog, LogAppender, LogCursor, LogEvent};
use loom::sync::Arc;

/// 64-byte data region; records of 24 bytes (3 words) wrap after two.
fn tiny() -> HeapLog {
    HeapLog::new(Geometry {
        capacity: 64,
        index_slots: 4,
        stride_shift: 5,
        max_record_len: 32,
    })
}

fn check(records: usize, polls: usize) -> usize {
    let iterations = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = iterations.clone();
    loom::model(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let shared = Arc::new(tiny());
        let writer_shared = shared.clone();
        // Resumed before the spawn: loom tracks only the latest access to each atomic, so
        // the writer's own start-up loads would hide the reader's accesses from it.
        let mut appender = LogAppender::resume(shared.view());
        let writer = loom::thread::spawn(move || {
            for i in 0..records as u64 {
                // Body: the sequence number (== i) in its one word.
                let seq = appender
                    .append(writer_shared.view(), 0x8000, &[&i.to_le_bytes()])
                    .expect("append");
                assert_eq!(seq, i);
            }
        });

        let mut cursor = LogCursor::new(0, Some(0), 0);
        let mut next_expected = 0u64;
        for _ in 0..polls {
            cursor
                .poll(shared.view(), 8, |event| match event {
                    LogEvent::Record { header, body, .. } => {
                        assert_eq!(header.seq, next_expected, "gap without a loss event");
                        let word = u64::from_le_bytes(body[..8].try_into().unwrap());
                        assert_eq!(word, header.seq, "torn record delivered");
                        next_expected += 1;
                    }
                    LogEvent::Lost { from_seq, to_seq } => {
                        assert_eq!(from_seq, next_expected, "loss must start where we were");
                        assert!(to_seq > from_seq);
                        next_expected = to_seq;
                    }
                })
                .expect("no corruption");
        }
        writer.join().unwrap();
        // After the writer is done, draining must account for every record exactly.
        for _ in 0..4 {
            cursor
                .poll(shared.view(), 8, |event| match event {
                    LogEvent::Record { header, body, .. } => {
                        assert_eq!(header.seq, next_expected);
                        assert_eq!(
                            u64::from_le_bytes(body[..8].try_into().unwrap()),
                            header.seq
                        );
                        next_expected += 1;
                    }
                    LogEvent::Lost { from_seq, to_seq } => {
                        assert_eq!(from_seq, next_expected);
                        next_expected = to_seq;
                    }
                })
                .expect("no corruption");
        }
        assert_eq!(next_expected, records as u64, "delivered + lost = written");
    });
    iterations.load(std::sync::atomic::Ordering::Relaxed)
}

#[test]
fn loom_reader_keeps_up_without_wrapping() {
    let explored = check(2, 2);
    eprintln!("loom explored {explored} interleavings");
    assert!(explored > 20, "loom explored only {explored} interleavings");
}

#[test]
fn loom_writer_wraps_and_laps_the_reader() {
    // 4 records × 24 bytes in a 64-byte ring: padding at the wrap and a possible lap.
    let explored = check(4, 1);
    eprintln!("loom explored {explored} interleavings");
    assert!(explored > 20, "loom explored only {explored} interleavings");
}

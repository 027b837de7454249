//! The SDK's order books (issue 21): after any cut of the stream (a late joiner) and any
//! loss, a book the SDK calls valid equals the publisher's at that point of the stream —
//! never a wrong level; and it is valid again after the next snapshot (the publisher
//! writes one at each state refresh).

use std::collections::BTreeMap;

use mdi_protocol::records::{BookUpdate, FeedState, FeedStatus, PriceLevel};
use mdi_protocol::ring::Seq;
use mdi_protocol::view::Record;
use mdi_subscriber::{BookChange, Books, Event};
use proptest::prelude::*;

type Side = BTreeMap<i64, i64>;

/// What the publisher writes: records, and its book after each.
struct Stream {
    records: Vec<Record>,
    books: Vec<(Side, Side)>,
}

/// Venue steps: a delta of up to 4 level changes, a state refresh (a snapshot of the
/// book as it stands), or a venue gap (the publisher says so, then resyncs from a
/// snapshot after more changes it never saw — as Binance's procedure goes).
#[derive(Debug, Clone)]
enum Step {
    Delta(Vec<(bool, i64, i64)>),
    Refresh,
    Gap(Vec<(bool, i64, i64)>),
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let change = (any::<bool>(), 90i64..110, 0i64..5);
    prop::collection::vec(
        prop_oneof![
            8 => prop::collection::vec(change.clone(), 1..4).prop_map(Step::Delta),
            1 => Just(Step::Refresh),
            1 => prop::collection::vec(change, 1..4).prop_map(Step::Gap),
        ],
        1..120,
    )
}

fn levels(side: &Side) -> Vec<PriceLevel> {
    side.iter()
        .map(|(&price, &qty)| PriceLevel { price, qty })
        .collect()
}

fn update(
    snapshot: bool,
    first: u64,
    last: u64,
    bids: Vec<PriceLevel>,
    asks: Vec<PriceLevel>,
) -> Record {
    Record::Book(Box::new(BookUpdate {
        instrument_id: 7,
        price_exponent: -2,
        qty_exponent: -3,
        is_snapshot: snapshot,
        first_update_id: first,
        last_update_id: last,
        venue_seq: last,
        bids,
        asks,
        ..BookUpdate::default()
    }))
}

fn publish(steps: &[Step]) -> Stream {
    let (mut bids, mut asks) = (Side::new(), Side::new());
    let mut id = 100u64;
    let mut stream = Stream {
        records: vec![update(true, id, id, vec![], vec![])],
        books: vec![(Side::new(), Side::new())],
    };
    let apply = |bids: &mut Side, asks: &mut Side, changes: &[(bool, i64, i64)]| {
        let (mut b, mut a) = (Vec::new(), Vec::new());
        for &(bid, price, qty) in changes {
            // bids below 100, asks from 100: the book never crosses
            let (side, out, price) = if bid {
                (&mut *bids, &mut b, price - 20)
            } else {
                (&mut *asks, &mut a, price + 20)
            };
            if qty == 0 {
                side.remove(&price);
            } else {
                side.insert(price, qty);
            }
            out.push(PriceLevel { price, qty });
        }
        (b, a)
    };
    for step in steps {
        match step {
            Step::Delta(changes) => {
                let (b, a) = apply(&mut bids, &mut asks, changes);
                stream.records.push(update(false, id + 1, id + 1, b, a));
                id += 1;
            }
            Step::Refresh => {
                stream
                    .records
                    .push(update(true, id, id, levels(&bids), levels(&asks)));
            }
            Step::Gap(changes) => {
                stream.records.push(Record::Status(Box::new(FeedStatus {
                    instrument_id: 7,
                    state: FeedState::Gap,
                    ..FeedStatus::default()
                })));
                stream.books.push((bids.clone(), asks.clone()));
                stream.records.push(Record::Status(Box::new(FeedStatus {
                    instrument_id: 7,
                    state: FeedState::ResyncStarted,
                    ..FeedStatus::default()
                })));
                stream.books.push((bids.clone(), asks.clone()));
                // changes the stream never carried, then the resync's snapshot
                apply(&mut bids, &mut asks, changes);
                id += 5;
                stream
                    .records
                    .push(update(true, id, id, levels(&bids), levels(&asks)));
            }
        }
        stream.books.push((bids.clone(), asks.clone()));
    }
    stream
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn a_valid_book_is_the_publishers_after_any_cut_and_any_loss(
        steps in steps(),
        cut in 0usize..400,
        losses in prop::collection::vec((0usize..400, 1usize..6), 0..4),
    ) {
        let stream = publish(&steps);
        let n = stream.records.len();
        let cut = cut % n;
        let mut lost = vec![false; n];
        for (at, len) in losses {
            for flag in lost.iter_mut().take((at + len).min(n)).skip(at) {
                *flag = true;
            }
        }
        let mut books = Books::new();
        let mut valid_since_snapshot_after_loss = false;
        let mut i = cut;
        while i < n {
            if lost[i] {
                let from = i;
                while i < n && lost[i] {
                    i += 1;
                }
                let change = books.on_event(&Event::Lost {
                    stream: "ticks",
                    from_seq: Seq(from as u64),
                    to_seq: Seq(i as u64),
                    count: (i - from) as u64,
                });
                prop_assert!(matches!(change, None | Some(BookChange::InvalidatedAll)));
                valid_since_snapshot_after_loss = false;
                continue;
            }
            let record = &stream.records[i];
            books.on_event(&Event::Record {
                stream: "ticks",
                seq: Seq(i as u64),
                record: record.clone(),
                symbol: None,
            });
            if matches!(record, Record::Book(b) if b.is_snapshot) {
                valid_since_snapshot_after_loss = true;
            }
            if let Some(book) = books.book(7)
                && book.is_valid()
            {
                let (bids, asks) = book.raw_levels();
                prop_assert_eq!((bids, asks), (&stream.books[i].0, &stream.books[i].1), "record {}", i);
            }
            if matches!(record, Record::Status(s) if s.state == FeedState::Gap) {
                valid_since_snapshot_after_loss = false;
            }
            prop_assert_eq!(
                books.book(7).is_some_and(|b| b.is_valid()),
                valid_since_snapshot_after_loss,
                "record {}", i
            );
            i += 1;
        }
    }
}

#[test]
fn best_levels_and_depth_in_exact_decimals() {
    let mut books = Books::new();
    let bids = vec![
        PriceLevel {
            price: 9_950,
            qty: 1_500,
        },
        PriceLevel {
            price: 9_990,
            qty: 250,
        },
    ];
    let asks = vec![PriceLevel {
        price: 10_010,
        qty: 3_000,
    }];
    assert_eq!(
        books.on_record(&update(true, 1, 1, bids, asks)),
        Some(BookChange::Rebuilt(7))
    );
    let book = books.book(7).unwrap();
    let best = book.best_bid().unwrap();
    assert_eq!(
        (best.price.to_string(), best.qty.to_string()),
        ("99.90".into(), "0.250".into())
    );
    assert_eq!(book.best_ask().unwrap().price.to_string(), "100.10");
    let (b, a) = book.depth(5);
    assert_eq!((b.len(), a.len()), (2, 1));
    assert_eq!(b[1].price.to_string(), "99.50");
    // a level removed by a delta; a stale delta (id not after the book's) ignored
    books.on_record(&update(
        false,
        2,
        2,
        vec![PriceLevel {
            price: 9_990,
            qty: 0,
        }],
        vec![],
    ));
    books.on_record(&update(
        false,
        2,
        2,
        vec![PriceLevel {
            price: 9_990,
            qty: 7,
        }],
        vec![],
    ));
    assert_eq!(
        books.book(7).unwrap().best_bid().unwrap().price.to_string(),
        "99.50"
    );
    // loss: no level shown until the next snapshot
    books.on_event(&Event::Lost {
        stream: "ticks",
        from_seq: Seq(5),
        to_seq: Seq(6),
        count: 1,
    });
    assert!(books.book(7).unwrap().best_bid().is_none());
    assert_eq!(books.book(7).unwrap().bids().count(), 0);
}

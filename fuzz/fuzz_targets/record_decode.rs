//! Any record body: decoding every record kind, or reading it through its zero-copy view
//! (every accessor), returns a value or an error, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mdi_protocol::records::{
    BookUpdate, EpochStart, FeedStatus, InstrumentDefinition, Kline, Quote, RecordKind, Trade,
    decode,
};
use mdi_protocol::view::RecordView;

/// Reads every field a view offers, formatting the decimals.
fn read_all(view: RecordView<'_>) {
    let _ = (view.instrument_id(), view.time_ns(), view.ts_publish_ns());
    let text = match view {
        RecordView::Trade(t) => {
            let _ = t.to_record();
            format!("{} {} {}", t.price(), t.qty(), t.side())
        }
        RecordView::Quote(q) => {
            let _ = q.to_record();
            format!(
                "{} {} {} {}",
                q.bid_price(),
                q.bid_qty(),
                q.ask_price(),
                q.ask_qty()
            )
        }
        RecordView::Book(b) => {
            let _ = b.to_record();
            let levels = |l: Result<mdi_protocol::view::Levels<'_>, _>| {
                l.map(|l| {
                    l.decimals()
                        .map(|(p, q)| format!("{q}@{p}"))
                        .collect::<Vec<_>>()
                })
            };
            format!("{:?} {:?}", levels(b.bids()), levels(b.asks()))
        }
        RecordView::Kline(k) => {
            let _ = (k.to_record(), k.interval());
            format!(
                "{} {} {} {} {} {} {} {}",
                k.open(),
                k.high(),
                k.low(),
                k.close(),
                k.volume(),
                k.quote_volume(),
                k.taker_buy_volume(),
                k.taker_buy_quote_volume()
            )
        }
        RecordView::Status(s) => {
            let _ = s.to_record();
            format!("{:?} {:?} {:?}", s.state(), s.venue(), s.detail())
        }
        RecordView::Instrument(d) => {
            let _ = (d.to_record(), d.kind());
            format!(
                "{:?} {:?} {:?} {:?} {} {}",
                d.symbol(),
                d.venue(),
                d.base_asset(),
                d.quote_asset(),
                d.tick_size(),
                d.step_size()
            )
        }
    };
    std::hint::black_box(text);
}

fuzz_target!(|bytes: &[u8]| {
    // Ring readers hand out 8-byte-aligned bodies; do the same.
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    for (i, b) in bytes.iter().enumerate() {
        words[i / 8] |= u64::from(*b) << (8 * (i % 8));
    }
    let aligned: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let body = &aligned[..bytes.len()];
    let _ = decode::<Trade>(body);
    let _ = decode::<Quote>(body);
    let _ = decode::<BookUpdate>(body);
    let _ = decode::<Kline>(body);
    let _ = decode::<InstrumentDefinition>(body);
    let _ = decode::<FeedStatus>(body);
    let _ = decode::<EpochStart>(body);
    for kind in [
        RecordKind::TRADE,
        RecordKind::QUOTE,
        RecordKind::BOOK_UPDATE,
        RecordKind::KLINE,
        RecordKind::FEED_STATUS,
        RecordKind::INSTRUMENT_DEFINITION,
    ] {
        let _ = RecordView::open(kind, body, read_all);
    }
});

//! A minimal strategy: mid price (from best bid/offer) and VWAP (from trades) per symbol,
//! printed once a second. Reads the `ticks` stream of the shm directory
//! (`$MDI_SHM_DIR`, else /dev/shm/mdi). Optional argument: seconds to run (default: until
//! interrupted). See README.md next to this file.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mdi_subscriber::{Decimal, Event, Record, RecordKind, RecordKinds, Subscriber};

#[derive(Default)]
struct Book {
    mid: Option<Decimal>,
    /// Σ price·qty and Σ qty as exact mantissas (exponents pe+qe and qe).
    notional: i128,
    volume: i128,
    exponents: (i8, i8),
    trades: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: Option<f64> = std::env::args().nth(1).map(|s| s.parse()).transpose()?;
    let mut ticks = Subscriber::builder()
        .stream("ticks")
        .kinds(RecordKinds::only(RecordKind::TRADE).with(RecordKind::QUOTE))
        .from_earliest()
        .register("shm_subscribe")
        .open()?;
    let started = Instant::now();
    let mut books: BTreeMap<&str, Book> = BTreeMap::new();
    let mut last_print = Instant::now();
    while seconds.is_none_or(|s| started.elapsed().as_secs_f64() < s) {
        if let Some(event) = ticks.next(Duration::from_millis(100))? {
            match event {
                Event::Record {
                    record,
                    symbol: Some(symbol),
                    ..
                } => {
                    let book = books.entry(symbol).or_default();
                    match record {
                        Record::Quote(q) => {
                            // (bid + ask) / 2, exactly: one more decimal digit
                            let sum = i128::from(q.bid_price) + i128::from(q.ask_price);
                            book.mid = Some(Decimal::new(sum * 5, q.price_exponent - 1));
                        }
                        Record::Trade(t) => {
                            book.notional += i128::from(t.price) * i128::from(t.qty);
                            book.volume += i128::from(t.qty);
                            book.exponents = (t.price_exponent, t.qty_exponent);
                            book.trades += 1;
                        }
                        _ => {}
                    }
                }
                Event::Lost { stream, count, .. } => eprintln!("{stream}: {count} records lost"),
                Event::WriterGone { stream, state } => eprintln!("{stream}: writer {state:?}"),
                _ => {}
            }
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            for (symbol, b) in &books {
                // VWAP = Σ p·q / Σ q, shown with the price's decimals (truncated)
                let vwap = (b.volume > 0).then(|| {
                    let (pe, _) = b.exponents;
                    Decimal::new(b.notional / b.volume, pe)
                });
                println!(
                    "{symbol:<10} mid {:>16}  vwap {:>16}  trades {}",
                    b.mid.map_or("-".into(), |m| m.to_string()),
                    vwap.map_or("-".into(), |v| v.to_string()),
                    b.trades
                );
            }
        }
    }
    Ok(())
}

//! Order books kept by the SDK, joining at any moment: subscribes to the `ticks` stream
//! from `latest` (a late joiner), hands every event to `Books`, and once a second prints
//! each symbol's best bid and offer and three levels a side — exact decimals. A book is
//! shown only while whole: from the publisher's next snapshot (its state refresh comes
//! every second) until a loss. Optional argument: seconds to run (default: until
//! interrupted). See README.md next to this file.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mdi_subscriber::{BookChange, Books, Event, Subscriber};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: Option<f64> = std::env::args().nth(1).map(|s| s.parse()).transpose()?;
    let mut ticks = Subscriber::builder().stream("ticks").open()?;
    let mut books = Books::new();
    let mut symbols: BTreeMap<u32, &'static str> = BTreeMap::new();
    let started = Instant::now();
    let mut last_print = Instant::now();
    while seconds.is_none_or(|s| started.elapsed().as_secs_f64() < s) {
        let Some(event) = ticks.next(Duration::from_millis(100))? else {
            continue;
        };
        if let Event::Record {
            record: mdi_subscriber::Record::Book(update),
            symbol: Some(symbol),
            ..
        } = &event
        {
            symbols.insert(update.instrument_id, symbol);
        }
        match books.on_event(&event) {
            Some(BookChange::Rebuilt(id)) => {
                println!(
                    "{} book whole (from a snapshot)",
                    symbols.get(&id).unwrap_or(&"?")
                );
            }
            Some(BookChange::Invalidated(id)) => {
                println!(
                    "{} book invalid until its next snapshot",
                    symbols.get(&id).unwrap_or(&"?")
                );
            }
            Some(BookChange::InvalidatedAll) => {
                println!("records lost: every book waits for a snapshot")
            }
            _ => {}
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            for (&id, symbol) in &symbols {
                let Some(book) = books.book(id).filter(|b| b.is_valid()) else {
                    println!("{symbol} (no whole book yet)");
                    continue;
                };
                let (bids, asks) = book.depth(3);
                let show = |levels: &[mdi_subscriber::Level]| {
                    levels
                        .iter()
                        .map(|l| format!("{}@{}", l.qty, l.price))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                println!(
                    "{symbol} bid {} ask {} | bids {} | asks {}",
                    book.best_bid().map_or("-".into(), |l| l.price.to_string()),
                    book.best_ask().map_or("-".into(), |l| l.price.to_string()),
                    show(&bids),
                    show(&asks)
                );
            }
        }
    }
    Ok(())
}

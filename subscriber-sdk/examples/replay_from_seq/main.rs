//! Start a stream at a sequence number: prints the first records from there, or says
//! how far back the ring still reaches. Arguments: STREAM SEQ [COUNT] (default
//! `ticks 1 10`). See README.md next to this file.

use std::time::Duration;

use mdi_subscriber::{Event, RecordKinds, SubscribeError, Subscriber};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let stream = args.next().unwrap_or_else(|| "ticks".into());
    let seq: u64 = args.next().map_or(Ok(1), |s| s.parse())?;
    let count: usize = args.next().map_or(Ok(10), |s| s.parse())?;
    let mut subscriber = match Subscriber::builder()
        .stream(&stream)
        .kinds(RecordKinds::ALL)
        .from_sequence(seq)
        .open()
    {
        Ok(s) => s,
        Err(e @ SubscribeError::Open { .. }) => {
            // e.g. "sequence 1 is no longer retained; the earliest retained is 5121"
            eprintln!("{e}");
            std::process::exit(2);
        }
        Err(e) => return Err(e.into()),
    };
    let mut shown = 0;
    while shown < count {
        match subscriber.next(Duration::from_secs(2))? {
            Some(Event::Record {
                seq,
                record,
                symbol,
                ..
            }) => {
                println!("#{seq} {} {record:?}", symbol.unwrap_or_default());
                shown += 1;
            }
            Some(other) => println!("{other:?}"),
            None => break,
        }
    }
    Ok(())
}

//! Subscribe over reliable UDP with loss repair: join a channel (default
//! udp://127.0.0.1:40456, where `mdpub demo` serves), keep local replica rings in a
//! temporary directory while dropping 5 % of what arrives, and read trades from the
//! replica with the ordinary subscriber. Prints what the NAKs repaired. Arguments:
//! [URI] [SECONDS]. See README.md next to this file.

use std::time::{Duration, Instant};

use mdi_subscriber::{
    Channel, Event, Record, RecordKind, RecordKinds, ShmDir, Subscriber, UdpReceiver,
    UdpReceiverOptions,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let uri = args
        .next()
        .unwrap_or_else(|| "udp://127.0.0.1:40456".into());
    let seconds: f64 = args.next().map_or(Ok(10.0), |s| s.parse())?;
    let replicas = std::env::temp_dir().join(format!("mdi-example-{}", std::process::id()));
    let mut receiver = UdpReceiver::new(
        Channel::parse(&uri)?,
        ShmDir::new(&replicas),
        UdpReceiverOptions {
            debug_drop_rate: 0.05,
            ..UdpReceiverOptions::default()
        },
    )?;
    let started = Instant::now();
    let mut subscriber: Option<Subscriber> = None;
    let (mut trades, mut lost) = (0u64, 0u64);
    while started.elapsed().as_secs_f64() < seconds {
        receiver.poll(Duration::from_millis(1))?;
        for event in receiver.take_events() {
            eprintln!("{}: {:?}", event.stream, event.event);
        }
        if subscriber.is_none() && replicas.join("ticks.ring").exists() {
            subscriber = Some(
                Subscriber::builder()
                    .shm_dir(&replicas)
                    .stream("ticks")
                    .kinds(RecordKinds::only(RecordKind::TRADE))
                    .from_earliest()
                    .open()?,
            );
        }
        if let Some(s) = subscriber.as_mut() {
            s.poll(1024, |e| match e {
                Event::Record {
                    record: Record::Trade(_),
                    ..
                } => trades += 1,
                Event::Lost { count, .. } => lost += count,
                _ => {}
            })?;
        }
    }
    for stats in receiver.stats() {
        println!(
            "{}: {} records replicated, {} NAKs sent, {} lost for good; {} datagrams dropped on purpose",
            stats.stream,
            stats.counters.records,
            stats.counters.naks,
            stats.counters.lost_records,
            receiver.debug_dropped()
        );
    }
    println!("{trades} trades read from the replica, {lost} records lost");
    drop(subscriber);
    drop(receiver);
    let _ = std::fs::remove_dir_all(&replicas);
    Ok(())
}

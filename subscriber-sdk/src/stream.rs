//! Events as an async [`Stream`] for tokio programs (feature `tokio`, opt-in: `features = ["tokio"]`).
//!
//! The rings are polled without blocking; while nothing is there the stream sleeps on a
//! tokio timer for `idle` (the latency it adds when quiet), so it never holds up the
//! runtime. Latency-critical code should poll on a thread of its own instead.
//!
//! ```no_run
//! use std::time::Duration;
//! use futures_util::StreamExt;
//! use mdi_subscriber::{Subscriber, stream::events};
//!
//! # async fn run() -> Result<(), mdi_subscriber::SubscribeError> {
//! let subscriber = Subscriber::builder().stream("ticks").open()?;
//! let mut events = std::pin::pin!(events(subscriber, Duration::from_micros(200)));
//! while let Some(event) = events.next().await {
//!     println!("{:?}", event?);
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::Stream;

use crate::{Event, SubscribeError, Subscriber};

/// The subscriber's events as a stream; it ends only on an error (which it yields).
pub fn events(
    subscriber: Subscriber,
    idle: Duration,
) -> impl Stream<Item = Result<Event, SubscribeError>> {
    futures_util::stream::unfold(
        Some((subscriber, VecDeque::new())),
        move |state| async move {
            let (mut subscriber, mut pending) = state?;
            loop {
                if let Some(event) = pending.pop_front() {
                    return Some((Ok(event), Some((subscriber, pending))));
                }
                match subscriber.poll(256, |e| pending.push_back(e)) {
                    Ok(0) => tokio::time::sleep(idle).await,
                    Ok(_) => {}
                    Err(e) => return Some((Err(e), None)),
                }
            }
        },
    )
}

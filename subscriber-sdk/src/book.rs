//! Order books and latest values kept by the SDK from a stream's records (issue 21, ADR
//! 0016): a strategy hands every [`Event`] to [`Books`] and reads best bid and offer,
//! depth and levels per instrument, in exact decimals.
//!
//! A book is *valid* from a snapshot on (a `BookUpdate` with `is_snapshot`: the
//! publisher writes one when it syncs or resyncs, and again every state refresh, so a
//! late joiner gets one within the refresh period) and changes with each delta after
//! it. Loss makes it invalid until the next snapshot — [`Event::Lost`] (all books of the
//! stream), a FeedStatus `gap` or `resync_started` (that instrument, or all for
//! instrument 0) — and [`BookChange`] says so; a book is never shown with a level it
//! may not have. The latest Quote and K-line per instrument (a last-value cache) come
//! along.

use std::collections::{BTreeMap, HashMap};

use mdi_protocol::decimal::Decimal;
use mdi_protocol::records::{BookUpdate, FeedState, Kline, Quote};
use mdi_protocol::view::Record;

use crate::Event;

/// A price level in exact decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    /// Price.
    pub price: Decimal,
    /// Quantity at the price.
    pub qty: Decimal,
}

/// One instrument's order book.
#[derive(Debug, Clone, Default)]
pub struct OrderBook {
    price_exponent: i8,
    qty_exponent: i8,
    bids: BTreeMap<i64, i64>,
    asks: BTreeMap<i64, i64>,
    /// The venue's update id the book stands at (the last snapshot's or delta's).
    update_id: Option<u64>,
    valid: bool,
}

impl OrderBook {
    /// Whether the book is whole: built from a snapshot, nothing lost since.
    pub fn is_valid(&self) -> bool {
        self.valid
    }

    /// The venue's update id the book stands at, while valid.
    pub fn update_id(&self) -> Option<u64> {
        self.valid.then_some(self.update_id).flatten()
    }

    fn level(&self, (&price, &qty): (&i64, &i64)) -> Level {
        Level {
            price: Decimal::new(i128::from(price), self.price_exponent),
            qty: Decimal::new(i128::from(qty), self.qty_exponent),
        }
    }

    /// The best (highest) bid, while valid.
    pub fn best_bid(&self) -> Option<Level> {
        self.valid
            .then(|| self.bids.iter().next_back().map(|l| self.level(l)))
            .flatten()
    }

    /// The best (lowest) ask, while valid.
    pub fn best_ask(&self) -> Option<Level> {
        self.valid
            .then(|| self.asks.iter().next().map(|l| self.level(l)))
            .flatten()
    }

    /// Bids, best first (none while invalid).
    pub fn bids(&self) -> impl Iterator<Item = Level> + '_ {
        self.bids
            .iter()
            .rev()
            .filter(|_| self.valid)
            .map(|l| self.level(l))
    }

    /// Asks, best first (none while invalid).
    pub fn asks(&self) -> impl Iterator<Item = Level> + '_ {
        self.asks
            .iter()
            .filter(|_| self.valid)
            .map(|l| self.level(l))
    }

    /// The best `n` levels of each side.
    pub fn depth(&self, n: usize) -> (Vec<Level>, Vec<Level>) {
        (self.bids().take(n).collect(), self.asks().take(n).collect())
    }

    /// The raw levels (price → quantity mantissas), for comparisons and tests.
    pub fn raw_levels(&self) -> (&BTreeMap<i64, i64>, &BTreeMap<i64, i64>) {
        (&self.bids, &self.asks)
    }

    fn apply(&mut self, update: &BookUpdate) -> Option<BookChange> {
        let id = update.instrument_id;
        if update.is_snapshot {
            let rebuilt = !self.valid;
            self.bids.clear();
            self.asks.clear();
            self.price_exponent = update.price_exponent;
            self.qty_exponent = update.qty_exponent;
            self.set(update);
            self.update_id = Some(update.last_update_id);
            self.valid = true;
            return Some(if rebuilt {
                BookChange::Rebuilt(id)
            } else {
                BookChange::Updated(id)
            });
        }
        if !self.valid {
            // a delta to a book that is not whole: it waits for a snapshot
            return None;
        }
        if self
            .update_id
            .is_some_and(|at| update.last_update_id != 0 && update.last_update_id <= at)
        {
            // already in the book (the publisher's state refresh repeats what was)
            return None;
        }
        self.set(update);
        if update.last_update_id != 0 {
            self.update_id = Some(update.last_update_id);
        }
        Some(BookChange::Updated(id))
    }

    fn set(&mut self, update: &BookUpdate) {
        for (side, levels) in [
            (&mut self.bids, &update.bids),
            (&mut self.asks, &update.asks),
        ] {
            for level in levels {
                if level.qty == 0 {
                    side.remove(&level.price);
                } else {
                    side.insert(level.price, level.qty);
                }
            }
        }
    }

    fn invalidate(&mut self) -> bool {
        std::mem::replace(&mut self.valid, false)
    }
}

/// What an event did to the books.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookChange {
    /// The instrument's book changed (a delta, or a snapshot of a valid book).
    Updated(u32),
    /// The instrument's book is whole again, from a snapshot (it was new, or invalid).
    Rebuilt(u32),
    /// The instrument's book may have missed updates: invalid until its next snapshot.
    Invalidated(u32),
    /// Every book may have missed updates (records of the stream were lost).
    InvalidatedAll,
}

/// The books, latest quotes and latest K-lines of the instruments of one stream.
#[derive(Debug, Default)]
pub struct Books {
    books: HashMap<u32, OrderBook>,
    quotes: HashMap<u32, Quote>,
    klines: HashMap<(u32, u64), Kline>,
}

impl Books {
    /// No books yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes an event of the stream; says what changed in the books, if anything.
    pub fn on_event(&mut self, event: &Event) -> Option<BookChange> {
        match event {
            Event::Record { record, .. } => self.on_record(record),
            Event::Lost { .. } | Event::Restarted { .. } | Event::Replaced { .. } => {
                let any = self
                    .books
                    .values_mut()
                    .fold(false, |any, b| b.invalidate() | any);
                any.then_some(BookChange::InvalidatedAll)
            }
            _ => None,
        }
    }

    /// Takes a record of the stream.
    pub fn on_record(&mut self, record: &Record) -> Option<BookChange> {
        match record {
            Record::Book(update) => self
                .books
                .entry(update.instrument_id)
                .or_default()
                .apply(update),
            Record::Quote(quote) => {
                self.quotes.insert(quote.instrument_id, quote.clone());
                None
            }
            Record::Kline(kline) => {
                self.klines
                    .insert((kline.instrument_id, kline.interval_ms), (**kline).clone());
                None
            }
            Record::Status(status)
                if matches!(status.state, FeedState::Gap | FeedState::ResyncStarted) =>
            {
                if status.instrument_id == 0 {
                    let any = self
                        .books
                        .values_mut()
                        .fold(false, |any, b| b.invalidate() | any);
                    return any.then_some(BookChange::InvalidatedAll);
                }
                let book = self.books.get_mut(&status.instrument_id)?;
                book.invalidate()
                    .then_some(BookChange::Invalidated(status.instrument_id))
            }
            _ => None,
        }
    }

    /// The book of an instrument (valid or not), if it had any BookUpdate.
    pub fn book(&self, instrument_id: u32) -> Option<&OrderBook> {
        self.books.get(&instrument_id)
    }

    /// The latest Quote of an instrument.
    pub fn quote(&self, instrument_id: u32) -> Option<&Quote> {
        self.quotes.get(&instrument_id)
    }

    /// The latest K-line of an instrument for an interval (ms): the open candle, or the
    /// last final (or corrected) one.
    pub fn kline(&self, instrument_id: u32, interval_ms: u64) -> Option<&Kline> {
        self.klines.get(&(instrument_id, interval_ms))
    }
}

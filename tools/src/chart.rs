//! `mdtail --chart SYMBOL --interval 1m`: a live candlestick chart of a symbol's K-lines
//! in the terminal (ratatui). The candles are the records of the `klines` stream, open
//! candles included as they update; the price axis fits what is on screen.

use std::collections::BTreeMap;

use mdi_protocol::decimal::Decimal;
use mdi_protocol::records::Kline;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::widgets::Widget;

/// One candle as drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candle {
    /// Open time (ms).
    pub open_time_ms: i64,
    /// Open mantissa.
    pub open: i64,
    /// High mantissa.
    pub high: i64,
    /// Low mantissa.
    pub low: i64,
    /// Close mantissa.
    pub close: i64,
    /// Final.
    pub closed: bool,
}

/// The candles of one symbol and interval, newest last.
#[derive(Debug, Clone)]
pub struct Candles {
    interval_ms: u64,
    price_exponent: i8,
    candles: BTreeMap<i64, Candle>,
    keep: usize,
}

impl Candles {
    /// Candles of `interval_ms`, keeping the newest `keep`.
    pub fn new(interval_ms: u64, keep: usize) -> Self {
        Self {
            interval_ms,
            price_exponent: 0,
            candles: BTreeMap::new(),
            keep: keep.max(1),
        }
    }

    /// A K-line record of the symbol: kept if it is of the chart's interval (an update
    /// of an open candle replaces it).
    pub fn on_kline(&mut self, k: &Kline) {
        if k.interval_ms != self.interval_ms {
            return;
        }
        self.price_exponent = k.price_exponent;
        self.candles.insert(
            k.open_time_ms,
            Candle {
                open_time_ms: k.open_time_ms,
                open: k.open,
                high: k.high,
                low: k.low,
                close: k.close,
                closed: k.closed,
            },
        );
        while self.candles.len() > self.keep {
            self.candles.pop_first();
        }
    }

    /// How many candles are kept.
    pub fn len(&self) -> usize {
        self.candles.len()
    }

    /// True when no candle has come yet.
    pub fn is_empty(&self) -> bool {
        self.candles.is_empty()
    }

    /// The last close as a decimal.
    pub fn last_close(&self) -> Option<Decimal> {
        self.candles
            .values()
            .next_back()
            .map(|c| Decimal::new(c.close, self.price_exponent))
    }

    /// The chart as a widget.
    pub fn widget(&self) -> ChartWidget<'_> {
        ChartWidget { candles: self }
    }
}

/// Draws candles: one column each, the newest at the right; wicks `│`, bodies `█`, green
/// when the close is not below the open, red otherwise; the price range of the visible
/// candles at the right edge.
#[derive(Debug, Clone, Copy)]
pub struct ChartWidget<'a> {
    candles: &'a Candles,
}

impl Widget for ChartWidget<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let label_width = 16u16;
        if area.width <= label_width + 1 || area.height < 3 || self.candles.is_empty() {
            return;
        }
        let plot_width = usize::from(area.width - label_width - 1);
        let visible: Vec<&Candle> = self
            .candles
            .candles
            .values()
            .rev()
            .take(plot_width)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let high = visible.iter().map(|c| c.high).max().unwrap_or(0);
        let low = visible.iter().map(|c| c.low).min().unwrap_or(0);
        let rows = i64::from(area.height - 1);
        let span = (high - low).max(1);
        // row 0 at the top is the high
        let row_of = |price: i64| -> u16 {
            // rounded to the nearest row
            let from_top = ((high - price) * rows + span / 2) / span;
            u16::try_from(from_top.clamp(0, rows)).unwrap_or(0)
        };
        let x0 = area.x + area.width - label_width - 1 - u16::try_from(visible.len()).unwrap_or(0);
        for (i, c) in visible.iter().enumerate() {
            let x = x0 + u16::try_from(i).unwrap_or(0);
            let colour = if c.close >= c.open {
                Color::Green
            } else {
                Color::Red
            };
            let (top, bottom) = (row_of(c.high), row_of(c.low));
            for row in top..=bottom {
                buf[(x, area.y + row)]
                    .set_symbol("│")
                    .set_style(Style::default().fg(colour));
            }
            let (body_top, body_bottom) =
                (row_of(c.open.max(c.close)), row_of(c.open.min(c.close)));
            for row in body_top..=body_bottom {
                buf[(x, area.y + row)]
                    .set_symbol("█")
                    .set_style(Style::default().fg(colour));
            }
        }
        let pe = self.candles.price_exponent;
        let label_x = area.x + area.width - label_width;
        buf.set_string(
            label_x,
            area.y,
            Decimal::new(high, pe).to_string(),
            Style::default(),
        );
        buf.set_string(
            label_x,
            area.y + area.height - 1,
            Decimal::new(low, pe).to_string(),
            Style::default(),
        );
        if let Some(last) = visible.last() {
            buf.set_string(
                label_x,
                area.y + row_of(last.close),
                format!("{} ◀", Decimal::new(last.close, pe)),
                Style::default().fg(Color::Yellow),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kline(open_time_ms: i64, o: i64, h: i64, l: i64, c: i64) -> Kline {
        Kline {
            interval_ms: 60_000,
            open_time_ms,
            open: o,
            high: h,
            low: l,
            close: c,
            price_exponent: -2,
            ..Kline::default()
        }
    }

    #[test]
    fn candles_are_drawn_in_columns_with_their_colours() {
        let mut candles = Candles::new(60_000, 100);
        candles.on_kline(&kline(0, 100, 110, 90, 105)); // up
        candles.on_kline(&kline(60_000, 105, 106, 95, 96)); // down
        candles.on_kline(&Kline {
            interval_ms: 1_000,
            ..kline(0, 1, 1, 1, 1)
        }); // another interval: ignored
        // an update of the open candle replaces it
        candles.on_kline(&kline(60_000, 105, 106, 95, 97));
        assert_eq!(candles.len(), 2);
        assert_eq!(candles.last_close().unwrap().to_string(), "0.97");
        let area = Rect::new(0, 0, 20, 5);
        let mut buf = Buffer::empty(area);
        candles.widget().render(area, &mut buf);
        // plot columns: 20 - 16 - 1 = 3, two candles at x = 1 and 2
        let (up, down) = (1u16, 2u16);
        // the high (110) is the top row, the low (90) the bottom row
        assert_eq!(buf[(up, 0)].symbol(), "│");
        assert_eq!(buf[(up, 4)].symbol(), "│");
        assert_eq!(buf[(up, 1)].fg, Color::Green);
        assert_eq!(buf[(down, 2)].fg, Color::Red);
        assert_eq!(buf[(down, 2)].symbol(), "█");
        assert_eq!(buf[(down, 0)].symbol(), " ", "106 is below the top row");
        let labels: String = (4..20).map(|x| buf[(x, 0)].symbol().to_owned()).collect();
        assert!(labels.contains("1.10"), "{labels:?}");
    }
}

//! Binance WebSocket frames as text arrives: combined-stream envelopes
//! (`{"stream":"btcusdt@trade","data":{…}}`) or raw events, decoded without copying —
//! prices and quantities stay the venue's decimal strings until the normalizer turns them
//! into fixed point. Facts: `BINANCE.md` (design folder).

use serde::Deserialize;
use serde_json::value::RawValue;

/// A frame that is not a market-data event mdi understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not JSON, truncated, or a known event with a missing or mistyped field.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// Well-formed JSON of an event type mdi does not handle.
    #[error("unknown event {0:?}")]
    UnknownEvent(String),
}

/// A decoded frame. Decimal fields borrow the frame's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// `@trade`.
    Trade(TradeEvent<'a>),
    /// `@aggTrade`.
    AggTrade(AggTradeEvent<'a>),
    /// `@bookTicker`.
    BookTicker(BookTickerEvent<'a>),
    /// `@depth` / `@depth@100ms` (diff depth).
    Depth(DepthEvent<'a>),
    /// `serverShutdown`: the server will close this connection soon.
    ServerShutdown {
        /// Event time.
        event_time: i64,
    },
    /// A reply to a request (`{"result":null,"id":1}`).
    Response {
        /// The request id.
        id: i64,
    },
}

/// A trade (`e` = `trade`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TradeEvent<'a> {
    /// Event time.
    #[serde(rename = "E")]
    pub event_time: i64,
    /// Symbol.
    #[serde(rename = "s", borrow)]
    pub symbol: &'a str,
    /// Trade id.
    #[serde(rename = "t")]
    pub trade_id: u64,
    /// Price.
    #[serde(rename = "p", borrow)]
    pub price: &'a str,
    /// Quantity.
    #[serde(rename = "q", borrow)]
    pub qty: &'a str,
    /// Trade time.
    #[serde(rename = "T")]
    pub trade_time: i64,
    /// The buyer was the maker: the taker sold.
    #[serde(rename = "m")]
    pub buyer_is_maker: bool,
}

/// An aggregate trade (`e` = `aggTrade`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AggTradeEvent<'a> {
    /// Event time.
    #[serde(rename = "E")]
    pub event_time: i64,
    /// Symbol.
    #[serde(rename = "s", borrow)]
    pub symbol: &'a str,
    /// Aggregate trade id.
    #[serde(rename = "a")]
    pub agg_id: u64,
    /// Price.
    #[serde(rename = "p", borrow)]
    pub price: &'a str,
    /// Quantity.
    #[serde(rename = "q", borrow)]
    pub qty: &'a str,
    /// First raw trade id.
    #[serde(rename = "f")]
    pub first_id: u64,
    /// Last raw trade id.
    #[serde(rename = "l")]
    pub last_id: u64,
    /// Trade time.
    #[serde(rename = "T")]
    pub trade_time: i64,
    /// The buyer was the maker: the taker sold.
    #[serde(rename = "m")]
    pub buyer_is_maker: bool,
}

/// Best bid and offer. Spot frames carry no event type and no time.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BookTickerEvent<'a> {
    /// Book update id.
    #[serde(rename = "u")]
    pub update_id: u64,
    /// Symbol.
    #[serde(rename = "s", borrow)]
    pub symbol: &'a str,
    /// Best bid price.
    #[serde(rename = "b", borrow)]
    pub bid_price: &'a str,
    /// Best bid quantity.
    #[serde(rename = "B", borrow)]
    pub bid_qty: &'a str,
    /// Best ask price.
    #[serde(rename = "a", borrow)]
    pub ask_price: &'a str,
    /// Best ask quantity.
    #[serde(rename = "A", borrow)]
    pub ask_qty: &'a str,
    /// Event time (futures frames have one; spot frames do not).
    #[serde(rename = "E", default)]
    pub event_time: Option<i64>,
}

/// A diff-depth event: absolute quantities per level, `"0"` removes the level.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DepthEvent<'a> {
    /// Event time.
    #[serde(rename = "E")]
    pub event_time: i64,
    /// Symbol.
    #[serde(rename = "s", borrow)]
    pub symbol: &'a str,
    /// First update id in the event.
    #[serde(rename = "U")]
    pub first_update_id: u64,
    /// Final update id in the event.
    #[serde(rename = "u")]
    pub final_update_id: u64,
    /// Bid levels `[price, qty]`.
    #[serde(rename = "b", borrow)]
    pub bids: Vec<[&'a str; 2]>,
    /// Ask levels `[price, qty]`.
    #[serde(rename = "a", borrow)]
    pub asks: Vec<[&'a str; 2]>,
}

/// `GET /api/v3/depth` — a REST order-book snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DepthSnapshot<'a> {
    /// The last update id the snapshot includes.
    #[serde(rename = "lastUpdateId")]
    pub last_update_id: u64,
    /// Bid levels `[price, qty]`, best first.
    #[serde(borrow)]
    pub bids: Vec<[&'a str; 2]>,
    /// Ask levels `[price, qty]`, best first.
    #[serde(borrow)]
    pub asks: Vec<[&'a str; 2]>,
}

/// Decodes a REST depth snapshot.
pub fn parse_depth_snapshot(text: &str) -> Result<DepthSnapshot<'_>, FrameError> {
    typed(text)
}

/// The fields that tell a frame's kind: a combined stream's envelope, or a raw
/// event's type.
#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(rename = "e", borrow, default)]
    event: Option<&'a str>,
    #[serde(rename = "E", default)]
    event_time: Option<i64>,
    #[serde(default)]
    stream: Option<&'a str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    result: Option<&'a RawValue>,
    #[serde(default)]
    id: Option<i64>,
    #[serde(rename = "u", default)]
    update_id: Option<u64>,
}

fn malformed(e: &serde_json::Error) -> FrameError {
    FrameError::Malformed(e.to_string())
}

fn typed<'a, T: Deserialize<'a>>(json: &'a str) -> Result<T, FrameError> {
    serde_json::from_str(json).map_err(|e| malformed(&e))
}

/// Decodes one frame's text: one pass with sonic-rs for the frames Binance sends (an
/// envelope with `stream` first, or a raw event with `e` first), the general two-pass
/// path with serde_json for anything else (keys in another order, control frames).
pub fn parse(text: &str) -> Result<Event<'_>, FrameError> {
    match sonic_rs::from_str::<OnePass<'_>>(text) {
        Ok(OnePass(Some(event))) => Ok(event),
        Ok(OnePass(None)) => parse_general(text),
        Err(e) => Err(FrameError::Malformed(e.to_string())),
    }
}

/// [`parse`] with serde_json for the one-pass decoding too (for the side-by-side
/// benchmark; same results).
pub fn parse_serde_json(text: &str) -> Result<Event<'_>, FrameError> {
    match serde_json::from_str::<OnePass<'_>>(text) {
        Ok(OnePass(Some(event))) => Ok(event),
        Ok(OnePass(None)) => parse_general(text),
        Err(e) => Err(malformed(&e)),
    }
}

/// The one-pass decoding: `Some` event, or `None` for "decode it the general way".
struct OnePass<'a>(Option<Event<'a>>);

impl<'de> Deserialize<'de> for OnePass<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(OnePassVisitor)
    }
}

struct OnePassVisitor;

impl<'de> serde::de::Visitor<'de> for OnePassVisitor {
    type Value = OnePass<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a Binance event object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        use serde::de::IgnoredAny;
        use serde::de::value::MapAccessDeserializer;
        let event = match map.next_key::<&'de str>()? {
            Some("stream") => {
                let stream: &'de str = map.next_value()?;
                let next = map.next_key::<&'de str>()?;
                if next.is_none() {
                    return Ok(OnePass(None));
                }
                if next == Some("data") {
                    let kind = stream.split_once('@').map_or(stream, |(_, kind)| kind);
                    match kind {
                        "trade" => Some(Event::Trade(map.next_value()?)),
                        "aggTrade" => Some(Event::AggTrade(map.next_value()?)),
                        "bookTicker" => Some(Event::BookTicker(map.next_value()?)),
                        "depth" | "depth@100ms" | "depth@1000ms" => {
                            Some(Event::Depth(map.next_value()?))
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            None
                        }
                    }
                } else {
                    map.next_value::<IgnoredAny>()?;
                    None
                }
            }
            Some("e") => {
                // the rest of the object is the event's fields
                let kind: &'de str = map.next_value()?;
                let rest = MapAccessDeserializer::new(map);
                return Ok(OnePass(match kind {
                    "trade" => Some(Event::Trade(TradeEvent::deserialize(rest)?)),
                    "aggTrade" => Some(Event::AggTrade(AggTradeEvent::deserialize(rest)?)),
                    "depthUpdate" => Some(Event::Depth(DepthEvent::deserialize(rest)?)),
                    _ => {
                        IgnoredAny::deserialize(rest)?;
                        None
                    }
                }));
            }
            Some(_) => {
                map.next_value::<IgnoredAny>()?;
                None
            }
            None => None,
        };
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(OnePass(event))
    }
}

/// The general decoding: read what kind of frame it is, then decode it as that.
fn parse_general(text: &str) -> Result<Event<'_>, FrameError> {
    let probe: Probe<'_> = typed(text)?;
    if let (Some(stream), Some(data)) = (probe.stream, probe.data) {
        let kind = stream.split_once('@').map_or(stream, |(_, kind)| kind);
        let data = data.get();
        return match kind {
            "trade" => typed(data).map(Event::Trade),
            "aggTrade" => typed(data).map(Event::AggTrade),
            "bookTicker" => typed(data).map(Event::BookTicker),
            "depth" | "depth@100ms" | "depth@1000ms" => typed(data).map(Event::Depth),
            _ => parse_raw(data, typed(data)?),
        };
    }
    parse_raw(text, probe)
}

/// A frame without an envelope: its `e` field (or shape) says what it is.
fn parse_raw<'a>(text: &'a str, probe: Probe<'a>) -> Result<Event<'a>, FrameError> {
    match probe.event {
        Some("trade") => typed(text).map(Event::Trade),
        Some("aggTrade") => typed(text).map(Event::AggTrade),
        Some("depthUpdate") => typed(text).map(Event::Depth),
        Some("bookTicker") => typed(text).map(Event::BookTicker),
        Some("serverShutdown") => Ok(Event::ServerShutdown {
            event_time: probe.event_time.unwrap_or(0),
        }),
        Some(other) => Err(FrameError::UnknownEvent(other.to_owned())),
        None if probe.result.is_some() || probe.id.is_some() => Ok(Event::Response {
            id: probe.id.unwrap_or(0),
        }),
        None if probe.update_id.is_some() => typed(text).map(Event::BookTicker),
        None => Err(FrameError::UnknownEvent(
            probe.stream.unwrap_or("(no event type)").to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // BINANCE.md's sample frames, verbatim.
    const TRADE: &str = r#"{"stream":"btcusdt@trade","data":{"e":"trade","E":1790649901913,"s":"BTCUSDT","t":6720857582,"p":"83034.29000000","q":"0.00062000","T":1790649901913,"m":true,"M":true}}"#;
    const AGG: &str = r#"{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1733464456075,"s":"BTCUSDT","a":3305280883,"p":"97900.88000000","q":"0.00208000","f":4216590360,"l":4216590360,"T":1733464456074,"m":true,"M":true}}"#;
    const TICKER: &str = r#"{"stream":"ethusdt@bookTicker","data":{"u":81782039482,"s":"ETHUSDT","b":"2718.65000000","B":"16.91070000","a":"2718.66000000","A":"12.68980000"}}"#;
    const DEPTH: &str = r#"{"e":"depthUpdate","E":1672515782136,"s":"BNBBTC","U":157,"u":160,"b":[["0.0024","10"]],"a":[["0.0026","100"]]}"#;

    #[test]
    fn the_sample_frames_decode() {
        let Event::Trade(t) = parse(TRADE).unwrap() else {
            panic!()
        };
        assert_eq!(
            (
                t.symbol,
                t.trade_id,
                t.price,
                t.qty,
                t.trade_time,
                t.buyer_is_maker
            ),
            (
                "BTCUSDT",
                6_720_857_582,
                "83034.29000000",
                "0.00062000",
                1_790_649_901_913,
                true
            )
        );
        let Event::AggTrade(a) = parse(AGG).unwrap() else {
            panic!()
        };
        assert_eq!(
            (a.agg_id, a.first_id, a.last_id, a.trade_time),
            (
                3_305_280_883,
                4_216_590_360,
                4_216_590_360,
                1_733_464_456_074
            )
        );
        let Event::BookTicker(b) = parse(TICKER).unwrap() else {
            panic!()
        };
        assert_eq!(
            (b.update_id, b.bid_price, b.ask_qty, b.event_time),
            (81_782_039_482, "2718.65000000", "12.68980000", None)
        );
        let Event::Depth(d) = parse(DEPTH).unwrap() else {
            panic!()
        };
        assert_eq!((d.first_update_id, d.final_update_id), (157, 160));
        assert_eq!(
            (d.bids, d.asks),
            (vec![["0.0024", "10"]], vec![["0.0026", "100"]])
        );
        // the same payloads without an envelope
        let raw = &TRADE[TRADE.find(",\"data\":").unwrap() + 8..TRADE.len() - 1];
        assert!(matches!(parse(raw), Ok(Event::Trade(_))));
        let raw = &TICKER[TICKER.find(",\"data\":").unwrap() + 8..TICKER.len() - 1];
        assert!(matches!(parse(raw), Ok(Event::BookTicker(_))));
        // JSON objects are unordered: an envelope with "data" first is the same frame
        let reordered = r#"{"data":{"s":"BTCUSDT","e":"trade","E":1,"t":2,"p":"1.5","q":"2","T":1,"m":false},"stream":"btcusdt@trade"}"#;
        assert!(matches!(parse(reordered), Ok(Event::Trade(t)) if t.trade_id == 2));
    }

    #[test]
    fn both_decoders_agree() {
        for frame in [
            TRADE,
            AGG,
            TICKER,
            DEPTH,
            r#"{"e":"serverShutdown","E":1}"#,
            r#"{"stream":"x@trade"}"#,
            r#"{"stream":"x@trade","other":1,"data":{}}"#,
            r#"{"id":3,"result":null}"#,
        ] {
            assert_eq!(parse(frame), parse_serde_json(frame), "{frame}");
            assert_eq!(parse(frame), parse_general(frame), "{frame}");
        }
    }

    #[test]
    fn control_frames_and_bad_frames_are_told_apart() {
        assert_eq!(
            parse(r#"{"e":"serverShutdown","E":1700000000000}"#),
            Ok(Event::ServerShutdown {
                event_time: 1_700_000_000_000
            })
        );
        assert_eq!(
            parse(r#"{"result":null,"id":7}"#),
            Ok(Event::Response { id: 7 })
        );
        assert!(matches!(
            parse(r#"{"e":"24hrTicker","E":1,"s":"X"}"#),
            Err(FrameError::UnknownEvent(e)) if e == "24hrTicker"
        ));
        for bad in [
            "",
            "not json",
            &TRADE[..TRADE.len() - 10],
            r#"{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT"}}"#,
            r#"{"e":"trade","E":1,"s":"X","t":"seven","p":"1","q":"1","T":1,"m":true}"#,
            r#"{"e":"depthUpdate","E":1,"s":"X","U":1,"u":2,"b":[["1"]],"a":[]}"#,
        ] {
            for decode in [parse, parse_serde_json] {
                assert!(
                    matches!(decode(bad), Err(FrameError::Malformed(_))),
                    "{bad:?}: {:?}",
                    decode(bad)
                );
            }
        }
    }
}

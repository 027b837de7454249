# mdi market-data records.
#
# Every record in a ring log is one single-segment Cap'n Proto message of one of
# the structs below; the ring's record header says which (see docs/formats/records.md).
#
# Conventions for every tick (Trade, Quote, BookUpdate, Kline):
#   instrumentId   mdi's id for the instrument, resolved by an InstrumentDefinition
#   venueSeq       the venue's own sequence number for this event (trade id, update id, ...)
#   tsExchangeNs   venue's event time, ns since the Unix epoch (0 if the venue gives none)
#   tsReceiveNs    when the frame carrying it arrived at the publisher, ns since the Unix epoch
#   tsPublishNs    when the record was committed to the ring, ns since the Unix epoch
# Prices and quantities are i64 mantissas: value = mantissa * 10^exponent, with the
# instrument's priceExponent / qtyExponent carried on every tick so a record is
# self-describing. Sums that can overflow i64 are 128-bit, split into hi (signed) / lo.

@0x8bee89408990cda8;

enum Side {
  unknown @0;
  buy @1;    # the aggressor bought (the maker was the seller)
  sell @2;   # the aggressor sold (the maker was the buyer)
}

struct Trade {
  instrumentId @0 :UInt32;
  priceExponent @1 :Int8;
  qtyExponent @2 :Int8;
  aggressor @3 :Side;
  venueSeq @4 :UInt64;
  tsExchangeNs @5 :Int64;
  tsReceiveNs @6 :Int64;
  tsPublishNs @7 :Int64;
  price @8 :Int64;
  qty @9 :Int64;
  tradeId @10 :UInt64;
  # For an aggregated trade (Binance aggTrade): the raw trade ids it covers.
  # For a plain trade both equal tradeId.
  firstTradeId @11 :UInt64;
  lastTradeId @12 :UInt64;
  isAggregate @13 :Bool;
}

struct Quote {
  instrumentId @0 :UInt32;
  priceExponent @1 :Int8;
  qtyExponent @2 :Int8;
  venueSeq @3 :UInt64;
  tsExchangeNs @4 :Int64;
  tsReceiveNs @5 :Int64;
  tsPublishNs @6 :Int64;
  bidPrice @7 :Int64;
  bidQty @8 :Int64;
  askPrice @9 :Int64;
  askQty @10 :Int64;
}

struct PriceLevel {
  price @0 :Int64;
  qty @1 :Int64;     # 0 removes the level
}

struct BookUpdate {
  instrumentId @0 :UInt32;
  priceExponent @1 :Int8;
  qtyExponent @2 :Int8;
  isSnapshot @3 :Bool;      # true: the levels replace the whole book
  venueSeq @4 :UInt64;      # = lastUpdateId
  tsExchangeNs @5 :Int64;
  tsReceiveNs @6 :Int64;
  tsPublishNs @7 :Int64;
  firstUpdateId @8 :UInt64; # the venue's first update id in this event (Binance U)
  lastUpdateId @9 :UInt64;  # the venue's last update id in this event (Binance u)
  bids @10 :List(PriceLevel);
  asks @11 :List(PriceLevel);
}

struct Kline {
  instrumentId @0 :UInt32;
  priceExponent @1 :Int8;
  qtyExponent @2 :Int8;
  closed @3 :Bool;          # false while the candle is open, true for the final candle
  spansOutage @4 :Bool;     # the feed was unhealthy during part of the interval
  venueSeq @5 :UInt64;      # last trade id included
  tsExchangeNs @6 :Int64;   # exchange time of the last trade included
  tsReceiveNs @7 :Int64;
  tsPublishNs @8 :Int64;
  intervalMs @9 :UInt64;
  openTimeMs @10 :Int64;
  closeTimeMs @11 :Int64;   # openTimeMs + intervalMs - 1
  open @12 :Int64;
  high @13 :Int64;
  low @14 :Int64;
  close @15 :Int64;
  # Sums. volume and takerBuyVolume have exponent qtyExponent; quoteVolume and
  # takerBuyQuoteVolume have exponent priceExponent + qtyExponent.
  volumeHi @16 :Int64;
  volumeLo @17 :UInt64;
  quoteVolumeHi @18 :Int64;
  quoteVolumeLo @19 :UInt64;
  takerBuyVolumeHi @20 :Int64;
  takerBuyVolumeLo @21 :UInt64;
  takerBuyQuoteVolumeHi @22 :Int64;
  takerBuyQuoteVolumeLo @23 :UInt64;
  trades @24 :UInt64;       # raw trade count
  firstTradeId @25 :Int64;  # -1 when the candle has no trade
  lastTradeId @26 :Int64;   # -1 when the candle has no trade
  revision @27 :UInt32;     # 0: the candle as first published final; n: its nth
                            # correction (a late trade changed it after it was final)
}

enum InstrumentKind {
  unknown @0;
  spot @1;
  equity @2;
  future @3;
  perpetual @4;
  option @5;
}

struct InstrumentDefinition {
  instrumentId @0 :UInt32;
  priceExponent @1 :Int8;
  qtyExponent @2 :Int8;
  kind @3 :InstrumentKind;
  tsReceiveNs @4 :Int64;
  tsPublishNs @5 :Int64;
  tickSize @6 :Int64;       # mantissa at priceExponent
  stepSize @7 :Int64;       # mantissa at qtyExponent
  venue @8 :Text;           # e.g. "binance", "nasdaq"
  symbol @9 :Text;          # venue symbol, e.g. "BTCUSDT"
  baseAsset @10 :Text;
  quoteAsset @11 :Text;
}

enum FeedState {
  connected @0;
  disconnected @1;
  reconnecting @2;
  gap @3;              # venue sequence gap: expectedSeq .. receivedSeq - 1 missing
  resyncStarted @4;    # book resynchronisation started (snapshot requested)
  resyncDone @5;
  halted @6;
  trading @7;
  endOfSession @8;
  malformed @9;        # a frame could not be parsed; counted and skipped
  valueOutOfRange @10; # a value did not fit the instrument's fixed-point range
  lagging @11;         # events arrive late: receive time - event time over the limit
                       # for a while (count: the lag in ms)
  caughtUp @12;        # the lag is back under the limit (count: the lag in ms)
  lateTrades @13;      # trades arrived after their candle was final (count: how many
                       # since the last report; detail: corrected and unplaced)
}

struct FeedStatus {
  instrumentId @0 :UInt32;  # 0 for the whole feed
  state @1 :FeedState;
  venueSeq @2 :UInt64;
  tsExchangeNs @3 :Int64;
  tsReceiveNs @4 :Int64;
  tsPublishNs @5 :Int64;
  expectedSeq @6 :UInt64;   # for gap: the first missing venue sequence
  receivedSeq @7 :UInt64;   # for gap: the sequence that arrived instead
  count @8 :UInt64;         # for gap: missing events; malformed/valueOutOfRange: how many
  venue @9 :Text;
  detail @10 :Text;
}

# Control record written by a ring writer as the first record of each epoch.
struct EpochStart {
  epoch @0 :UInt64;
  writerPid @1 :UInt32;
  startedNs @2 :Int64;
  previousEpoch @3 :UInt64;  # 0 when the ring is new
}

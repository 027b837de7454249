//! `mdpub run --config FILE`: the publisher's TOML configuration (documented example:
//! `config/example.toml`). Unknown keys are refused, so a typo is an error, not a default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::binance::live::LiveConfig;
use crate::binance::normalize::{InstrumentSpec, KlineSource, NormalizerConfig};
use crate::kline::Interval;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Shared-memory directory of the rings (overridden by `--shm-dir`).
    #[serde(default)]
    pub shm_dir: Option<PathBuf>,
    /// The Binance feed (this or `[itch]`).
    #[serde(default)]
    pub binance: Option<BinanceSection>,
    /// An ITCH 5.0 / MoldUDP64 multicast feed (this or `[binance]`).
    #[serde(default)]
    pub itch: Option<ItchSection>,
    /// Instruments with known exponents (others: from exchangeInfo, else 8 decimals).
    #[serde(default)]
    pub instruments: Vec<InstrumentSection>,
    /// K-lines.
    #[serde(default)]
    pub klines: KlineSection,
    /// The rings.
    #[serde(default)]
    pub streams: StreamsSection,
    /// Serving over reliable UDP.
    #[serde(default)]
    pub udp: UdpSection,
}

/// `[binance]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinanceSection {
    /// WebSocket base URL.
    #[serde(default = "default_ws_base")]
    pub ws_base: String,
    /// REST base URL (depth snapshots, exchangeInfo).
    #[serde(default = "default_rest_base")]
    pub rest_base: String,
    /// Symbols, e.g. `["BTCUSDT", "ETHUSDT"]`.
    pub symbols: Vec<String>,
    /// Streams per symbol: `trade`, `aggTrade`, `bookTicker`, `depth`, `depth@100ms`.
    #[serde(default = "default_streams")]
    pub streams: Vec<String>,
    /// Exponents from `GET /api/v3/exchangeInfo` (tick and step sizes) for symbols not in
    /// `[[instruments]]`; off: Binance's 8-decimal strings.
    #[serde(default = "yes")]
    pub exchange_info: bool,
    /// Replace a connection when it is this old (seconds; Binance's limit is 24 h).
    #[serde(default)]
    pub max_connection_age_s: Option<u64>,
    /// An extra trusted CA certificate (PEM): local test servers, TLS proxies.
    #[serde(default)]
    pub extra_ca: Option<PathBuf>,
    /// Timestamps in microseconds (`timeUnit=MICROSECOND` is added to the URL).
    #[serde(default)]
    pub microseconds: bool,
}

fn default_ws_base() -> String {
    "wss://stream.binance.com:9443".into()
}

fn default_rest_base() -> String {
    "https://api.binance.com".into()
}

fn default_streams() -> Vec<String> {
    vec!["trade".into(), "bookTicker".into(), "depth@100ms".into()]
}

fn yes() -> bool {
    true
}

/// `[itch]`: a NASDAQ TotalView-ITCH 5.0 feed on MoldUDP64 multicast.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItchSection {
    /// The feed's multicast group and port, `233.54.12.1:26400`.
    pub group: std::net::SocketAddrV4,
    /// The local interface address to join on (socket backend); default: any.
    #[serde(default = "any_interface")]
    pub interface: std::net::Ipv4Addr,
    /// The venue's re-request server, `10.0.0.1:26401`; none: gaps are reported lost.
    #[serde(default)]
    pub request_server: Option<std::net::SocketAddr>,
    /// Only this MoldUDP64 session (10 characters); default: the first one seen.
    #[serde(default)]
    pub session: Option<String>,
    /// The session date, `YYYY-MM-DD` (ITCH times count from its midnight); default: today.
    #[serde(default)]
    pub date: Option<String>,
    /// A re-request unanswered this long is sent again (ms).
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Re-requests per gap before it is reported lost.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// The first message sequence wanted: what comes before the first packet received
    /// is re-requested from it (1: the whole session, for a publisher started before the
    /// open). Default: none — start where the first packet received starts (a late join;
    /// the books then count the orders they never saw added).
    #[serde(default)]
    pub start_seq: Option<u64>,
    /// `socket` (default) or `dpdk` (a build with the `dpdk` feature).
    #[serde(default = "default_backend")]
    pub backend: String,
    /// Spin on the socket instead of sleeping in it (a whole core, lowest latency).
    #[serde(default)]
    pub busy_poll: bool,
    /// Exit when the session ends (its end-of-session packet); default: keep running.
    #[serde(default)]
    pub stop_at_end: bool,
    /// The DPDK port (backend `dpdk`).
    #[serde(default)]
    pub dpdk: Option<DpdkSection>,
}

/// `[itch.dpdk]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpdkSection {
    /// EAL arguments, e.g. `["-l", "1", "-a", "0000:3b:00.0"]` or, for a kernel
    /// interface, `["-l", "0", "--no-huge", "--no-pci", "--vdev=net_af_packet0,iface=eth1"]`.
    pub eal_args: Vec<String>,
    /// The port's device name (`net_af_packet0`, `0000:3b:00.0`); default: the first.
    #[serde(default)]
    pub port: Option<String>,
}

fn any_interface() -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::UNSPECIFIED
}

fn default_request_timeout_ms() -> u64 {
    50
}

fn default_max_retries() -> u32 {
    5
}

fn default_backend() -> String {
    "socket".into()
}

/// `[[instruments]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstrumentSection {
    /// Symbol.
    pub symbol: String,
    /// Price exponent (−2: cents).
    pub price_exponent: i8,
    /// Quantity exponent.
    pub qty_exponent: i8,
}

/// `[klines]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KlineSection {
    /// Interval names.
    #[serde(default = "default_intervals")]
    pub intervals: Vec<String>,
    /// `trade`, `aggTrade`, or `auto` (the default): aggTrades when the streams include
    /// them, else trades.
    #[serde(default = "default_source")]
    pub source: String,
    /// Publish the open candle at most this often (ms); 0: final candles only.
    #[serde(default = "default_update_ms")]
    pub update_ms: u64,
}

impl Default for KlineSection {
    fn default() -> Self {
        Self {
            intervals: default_intervals(),
            source: default_source(),
            update_ms: default_update_ms(),
        }
    }
}

fn default_intervals() -> Vec<String> {
    Interval::DEFAULTS
        .iter()
        .map(|i| i.name().to_owned())
        .collect()
}

fn default_source() -> String {
    "auto".into()
}

fn default_update_ms() -> u64 {
    1_000
}

/// `[streams]`: ring capacities.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamsSection {
    /// `ticks` ring bytes (a power of two).
    #[serde(default = "default_capacity")]
    pub ticks_capacity: u64,
    /// `klines` ring bytes.
    #[serde(default = "default_capacity")]
    pub klines_capacity: u64,
}

impl Default for StreamsSection {
    fn default() -> Self {
        Self {
            ticks_capacity: default_capacity(),
            klines_capacity: default_capacity(),
        }
    }
}

fn default_capacity() -> u64 {
    mdi_protocol::ring::DEFAULT_CAPACITY
}

/// `[udp]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UdpSection {
    /// Channels to serve on (`udp://GROUP:PORT?iface=ADDR&ttl=N`, `udp://HOST:PORT`).
    #[serde(default)]
    pub channels: Vec<String>,
    /// Linger after the end (ms).
    #[serde(default)]
    pub linger_ms: Option<u64>,
    /// The pre-shared key file for the channels that do not name one (`?key=FILE`):
    /// their frames are tagged with it (docs/protocol.md, "Authentication").
    #[serde(default)]
    pub key_file: Option<std::path::PathBuf>,
}

impl UdpSection {
    /// The channels, parsed, each with its key: its own `key=FILE`, else `key_file`.
    pub fn parsed_channels(&self) -> Result<Vec<mdi_protocol::udp::Channel>, String> {
        let default_key = self
            .key_file
            .as_deref()
            .map(mdi_protocol::udp::ChannelKey::from_file)
            .transpose()
            .map_err(|e| format!("udp.key_file: {e}"))?;
        self.channels
            .iter()
            .map(|uri| {
                let mut channel = mdi_protocol::udp::Channel::parse(uri)
                    .map_err(|e| format!("udp.channels: {uri}: {e}"))?;
                channel.key = channel.key.or(default_key);
                Ok(channel)
            })
            .collect()
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading the file.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax or an unknown / mistyped key.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What and where.
        message: String,
    },
    /// A value that is not allowed.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

const STREAM_KINDS: [&str; 6] = [
    "trade",
    "aggTrade",
    "bookTicker",
    "depth",
    "depth@100ms",
    "depth@1000ms",
];

impl Config {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown)
    }

    /// Parses and checks a configuration's text (`origin` names it in errors).
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: origin.to_owned(),
            message,
        };
        match (&config.binance, &config.itch) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "both [binance] and [itch]: one feed per mdpub (run two)".into(),
                ));
            }
            (None, None) => {
                return Err(invalid(
                    "no feed: add a [binance] or an [itch] section".into(),
                ));
            }
            (None, Some(itch)) => {
                if !itch.group.ip().is_multicast() {
                    return Err(invalid(format!(
                        "itch.group: {} is not a multicast group",
                        itch.group
                    )));
                }
                match itch.backend.as_str() {
                    "socket" => {}
                    "dpdk" if itch.dpdk.is_some() => {}
                    "dpdk" => {
                        return Err(invalid(
                            "itch.backend is dpdk but there is no [itch.dpdk] section".into(),
                        ));
                    }
                    other => {
                        return Err(invalid(format!(
                            "itch.backend: {other:?} is neither socket nor dpdk"
                        )));
                    }
                }
                if itch.session.as_ref().is_some_and(|s| s.len() > 10) {
                    return Err(invalid("itch.session: at most 10 characters".into()));
                }
                if let Some(date) = &itch.date
                    && crate::itch::feed::session_midnight(date).is_none()
                {
                    return Err(invalid(format!("itch.date: {date:?} is not YYYY-MM-DD")));
                }
                if itch.start_seq == Some(0) {
                    return Err(invalid(
                        "itch.start_seq: MoldUDP64 sequence numbers start at 1".into(),
                    ));
                }
            }
            (Some(_), None) => {}
        }
        let binance = config.binance.as_ref();
        if binance.is_some_and(|b| b.symbols.is_empty()) {
            return Err(invalid(
                "binance.symbols is empty: name at least one symbol".into(),
            ));
        }
        for stream in binance.iter().flat_map(|b| &b.streams) {
            if !STREAM_KINDS.contains(&stream.as_str()) {
                return Err(invalid(format!(
                    "binance.streams: {stream:?} is not one of {}",
                    STREAM_KINDS.join(", ")
                )));
            }
        }
        for name in &config.klines.intervals {
            Interval::parse(name).map_err(|e| invalid(format!("klines.intervals: {e}")))?;
        }
        if !["trade", "aggTrade", "auto"].contains(&config.klines.source.as_str()) {
            return Err(invalid(format!(
                "klines.source: {:?} is none of trade, aggTrade, auto",
                config.klines.source
            )));
        }
        for capacity in [
            config.streams.ticks_capacity,
            config.streams.klines_capacity,
        ] {
            if !capacity.is_power_of_two() {
                return Err(invalid(format!(
                    "streams: capacity {capacity} is not a power of two"
                )));
            }
        }
        config.udp.parsed_channels().map_err(invalid)?;
        Ok(config)
    }

    /// The `[binance]` section (an empty one for an ITCH config).
    fn binance(&self) -> &BinanceSection {
        static NONE: std::sync::OnceLock<BinanceSection> = std::sync::OnceLock::new();
        self.binance.as_ref().unwrap_or_else(|| {
            NONE.get_or_init(|| BinanceSection {
                ws_base: default_ws_base(),
                rest_base: default_rest_base(),
                symbols: Vec::new(),
                streams: Vec::new(),
                exchange_info: false,
                max_connection_age_s: None,
                extra_ca: None,
                microseconds: false,
            })
        })
    }

    /// Every stream name to subscribe to (`btcusdt@trade`, …).
    pub fn stream_names(&self) -> Vec<String> {
        let binance = self.binance();
        binance
            .symbols
            .iter()
            .flat_map(|symbol| {
                binance
                    .streams
                    .iter()
                    .map(move |kind| format!("{}@{kind}", symbol.to_lowercase()))
            })
            .collect()
    }

    /// The live feed's settings.
    pub fn live(&self) -> LiveConfig {
        let binance = self.binance();
        let mut live = LiveConfig::binance(self.stream_names());
        live.ws_base.clone_from(&binance.ws_base);
        live.rest_base.clone_from(&binance.rest_base);
        live.extra_ca.clone_from(&binance.extra_ca);
        live.microseconds = binance.microseconds;
        if let Some(age) = binance.max_connection_age_s {
            live.max_connection_age = Duration::from_secs(age);
        }
        live
    }

    /// The normalizer's settings, with `instruments` resolved (config first, then what
    /// exchangeInfo said, then 8 decimals).
    pub fn normalizer(&self, exchange_info: &[InstrumentSpec]) -> NormalizerConfig {
        let instruments = self
            .binance()
            .symbols
            .iter()
            .map(|symbol| {
                self.instruments
                    .iter()
                    .find(|i| i.symbol.eq_ignore_ascii_case(symbol))
                    .map(|i| InstrumentSpec {
                        symbol: symbol.to_uppercase(),
                        price_exponent: i.price_exponent,
                        qty_exponent: i.qty_exponent,
                    })
                    .or_else(|| {
                        exchange_info
                            .iter()
                            .find(|i| i.symbol.eq_ignore_ascii_case(symbol))
                            .cloned()
                    })
                    .unwrap_or_else(|| InstrumentSpec::binance_default(&symbol.to_uppercase()))
            })
            .collect();
        NormalizerConfig {
            instruments,
            intervals: self
                .klines
                .intervals
                .iter()
                .filter_map(|n| Interval::parse(n).ok())
                .collect(),
            kline_source: match self.klines.source.as_str() {
                "aggTrade" => KlineSource::AggTrade,
                "auto" if self.binance().streams.iter().any(|s| s == "aggTrade") => {
                    KlineSource::AggTrade
                }
                _ => KlineSource::Trade,
            },
            kline_update_ms: (self.klines.update_ms > 0)
                .then(|| i64::try_from(self.klines.update_ms).unwrap_or(i64::MAX)),
            time_unit: if self.binance().microseconds {
                crate::binance::normalize::TimeUnit::Micros
            } else {
                crate::binance::normalize::TimeUnit::Millis
            },
            ..NormalizerConfig::default()
        }
    }

    /// Symbols whose exponents are not in the file.
    pub fn symbols_without_exponents(&self) -> Vec<String> {
        self.binance()
            .symbols
            .iter()
            .filter(|s| {
                !self
                    .instruments
                    .iter()
                    .any(|i| i.symbol.eq_ignore_ascii_case(s))
            })
            .map(|s| s.to_uppercase())
            .collect()
    }
}

/// The exponent of a Binance size string: `"0.01000000"` → −2, `"1.00000000"` → 0,
/// `"10.00000000"` → 1 is taken as 0 (mantissas count whole units at least).
pub fn size_exponent(size: &str) -> Option<i8> {
    let (whole, fraction) = size.split_once('.').unwrap_or((size, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole
            .chars()
            .chain(fraction.chars())
            .all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        return whole.chars().any(|c| c != '0').then_some(0);
    }
    i8::try_from(fraction.len()).ok().map(|n| -n)
}

/// Reads exponents from a `GET /api/v3/exchangeInfo` response: PRICE_FILTER's tickSize
/// and LOT_SIZE's stepSize per symbol.
pub fn exponents_from_exchange_info(body: &str) -> Result<Vec<InstrumentSpec>, String> {
    let value: serde_json::Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
    let symbols = value["symbols"]
        .as_array()
        .ok_or("exchangeInfo has no symbols array")?;
    let mut out = Vec::new();
    for s in symbols {
        let Some(symbol) = s["symbol"].as_str() else {
            continue;
        };
        let filter = |kind: &str, key: &str| {
            s["filters"].as_array().and_then(|filters| {
                filters
                    .iter()
                    .find(|f| f["filterType"] == kind)
                    .and_then(|f| f[key].as_str())
                    .and_then(size_exponent)
            })
        };
        if let (Some(price_exponent), Some(qty_exponent)) = (
            filter("PRICE_FILTER", "tickSize"),
            filter("LOT_SIZE", "stepSize"),
        ) {
            out.push(InstrumentSpec {
                symbol: symbol.to_owned(),
                price_exponent,
                qty_exponent,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses() {
        let text = include_str!("../../config/example.toml");
        let config = Config::parse(text, "example.toml").unwrap();
        assert_eq!(config.stream_names()[0], "btcusdt@trade");
        let n = config.normalizer(&[]);
        assert_eq!(n.instruments[0].price_exponent, -2);
        assert_eq!(n.intervals.len(), 6);
    }

    #[test]
    fn the_itch_example_config_parses() {
        let text = include_str!("../../config/itch.toml");
        let config = Config::parse(text, "itch.toml").unwrap();
        let itch = config.itch.unwrap();
        assert_eq!(itch.group.to_string(), "233.54.12.1:26400");
        assert_eq!(itch.backend, "socket");
        assert_eq!(itch.start_seq, Some(1));
        assert!(config.binance.is_none());
    }

    #[test]
    fn the_udp_key_file_keys_the_channels_that_name_none() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = |name: &str, byte: u8| {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("{byte:02x}").repeat(32)).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            path
        };
        let (shared, own) = (key("shared.key", 1), key("own.key", 2));
        let text = format!(
            "[binance]\nsymbols = [\"BTCUSDT\"]\n[udp]\nkey_file = {:?}\nchannels = [\"udp://127.0.0.1:9000\", \"udp://127.0.0.1:9001?key={}\"]\n",
            shared.display().to_string(),
            own.display()
        );
        let config = Config::parse(&text, "keyed.toml").unwrap();
        let channels = config.udp.parsed_channels().unwrap();
        use mdi_protocol::udp::ChannelKey;
        assert_eq!(channels[0].key, Some(ChannelKey::from_secret(&[1; 32])));
        assert_eq!(channels[1].key, Some(ChannelKey::from_secret(&[2; 32])));
        // a key file others can read is refused when the config is read
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Config::parse(&text, "keyed.toml").unwrap_err().to_string();
        assert!(
            err.contains("udp.key_file") && err.contains("chmod 600"),
            "{err}"
        );
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            ("[binance]\nsymbols = []", "symbols is empty"),
            (
                "[binance]\nsymbols = [\"BTCUSDT\"]\nstreams = [\"trades\"]",
                "\"trades\" is not one of",
            ),
            (
                "[binance]\nsymbols = [\"BTCUSDT\"]\n[klines]\nintervals = [\"7m\"]",
                "7m",
            ),
            ("[binance]\nsymbols = [\"BTCUSDT\"]\nsymbls = 1", "symbls"),
            (
                "[binance]\nsymbols = [\"BTCUSDT\"]\n[streams]\nticks_capacity = 1000",
                "power of two",
            ),
            (
                "[binance]\nsymbols = [\"BTCUSDT\"]\n[udp]\nchannels = [\"tcp://x\"]",
                "udp.channels",
            ),
            ("[udp]\nlinger_ms = 1", "no feed"),
            (
                "[binance]\nsymbols = [\"BTCUSDT\"]\n[itch]\ngroup = \"233.54.12.1:1\"",
                "one feed per mdpub",
            ),
            ("[itch]\ngroup = \"10.0.0.1:1\"", "not a multicast group"),
            (
                "[itch]\ngroup = \"233.54.12.1:1\"\nbackend = \"dpdk\"",
                "no [itch.dpdk] section",
            ),
            (
                "[itch]\ngroup = \"233.54.12.1:1\"\nbackend = \"xdp\"",
                "neither socket nor dpdk",
            ),
            (
                "[itch]\ngroup = \"233.54.12.1:1\"\ndate = \"2024-1-2\"",
                "itch.date",
            ),
            (
                "[itch]\ngroup = \"233.54.12.1:1\"\nstart_seq = 0",
                "itch.start_seq",
            ),
        ];
        for (text, expected) in cases {
            let err = Config::parse(text, "t.toml").unwrap_err().to_string();
            assert!(
                err.contains(expected) && err.starts_with("t.toml"),
                "{text:?}: {err}"
            );
        }
    }

    #[test]
    fn exponents_come_from_tick_and_step_sizes() {
        assert_eq!(size_exponent("0.01000000"), Some(-2));
        assert_eq!(size_exponent("0.00001000"), Some(-5));
        assert_eq!(size_exponent("1.00000000"), Some(0));
        assert_eq!(size_exponent("0.00000000"), None);
        assert_eq!(size_exponent("abc"), None);
        let body = r#"{"symbols":[{"symbol":"BTCUSDT","filters":[
            {"filterType":"PRICE_FILTER","minPrice":"0.01000000","tickSize":"0.01000000"},
            {"filterType":"LOT_SIZE","stepSize":"0.00001000"}]},
            {"symbol":"ODD","filters":[]}]}"#;
        assert_eq!(
            exponents_from_exchange_info(body).unwrap(),
            [InstrumentSpec {
                symbol: "BTCUSDT".into(),
                price_exponent: -2,
                qty_exponent: -5
            }]
        );
    }
}

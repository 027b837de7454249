//! Prometheus metrics of a shm directory's streams, read from shared memory and the
//! status files at scrape time (nothing on the data path does any work for them), in the
//! OpenMetrics text format of the maintained `prometheus-client` crate, served over
//! HTTP by [`serve`] (`mdstat --serve`, `--metrics` of `mdpub` and `mdrecv`).
//!
//! Names follow node_exporter's conventions: `mdi_` first, base units in the name
//! (`_bytes`, `_seconds`), counters end in `_total`; labels are `stream`, `channel`,
//! `reader`, `connection` — never an instrument. Every number `mdstat --json` shows is a
//! metric: the ring's header and registered readers, and each key of the UDP sender's,
//! UDP receiver's and feed's status files (`docs/operations.md` lists them).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use mdi_protocol::ring::ShmDir;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::Value;

use crate::stat::{sample, to_json};

type Labels = Vec<(String, String)>;
type GaugeF = Gauge<f64, std::sync::atomic::AtomicU64>;
type CounterF = Counter<f64, std::sync::atomic::AtomicU64>;

/// Status-file keys that are levels, not counts (every other number is a counter).
const GAUGE_KEYS: [&str; 6] = [
    "position",
    "receivers",
    "lagging",
    "last_seq",
    "lag_records",
    "lag_bytes",
];

/// Metrics being collected for one scrape.
#[derive(Default)]
struct Collect {
    gauges: Vec<(String, String, Family<Labels, GaugeF>)>,
    counters: Vec<(String, String, Family<Labels, CounterF>)>,
}

impl Collect {
    fn gauge(&mut self, name: &str, help: &str, labels: &Labels, value: f64) {
        let family = match self.gauges.iter().position(|(n, _, _)| n == name) {
            Some(i) => &self.gauges[i].2,
            None => {
                self.gauges
                    .push((name.to_owned(), help.to_owned(), Family::default()));
                &self.gauges.last().expect("just pushed").2
            }
        };
        family.get_or_create(labels).set(value);
    }

    /// A counter named without its `_total` (the encoder adds it).
    fn counter(&mut self, name: &str, help: &str, labels: &Labels, value: f64) {
        let family = match self.counters.iter().position(|(n, _, _)| n == name) {
            Some(i) => &self.counters[i].2,
            None => {
                self.counters
                    .push((name.to_owned(), help.to_owned(), Family::default()));
                &self.counters.last().expect("just pushed").2
            }
        };
        family.get_or_create(labels).inc_by(value.max(0.0));
    }

    fn encode(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(LatencyCollector));
        for (name, help, family) in self.gauges {
            registry.register(name, help, family);
        }
        for (name, help, family) in self.counters {
            registry.register(name, help, family);
        }
        let mut text = String::new();
        encode(&mut text, &registry).expect("writing to a String");
        text
    }
}

/// The publisher's latency histograms ([`crate::latency::FEED_LATENCY`]), when it has
/// recorded any: `mdi_feed_latency_seconds{stage="exchange_to_receive"|"receive_to_publish"}`.
#[derive(Debug)]
struct LatencyCollector;

impl prometheus_client::collector::Collector for LatencyCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        let latency = &crate::latency::FEED_LATENCY;
        let stages = [
            (
                "exchange_to_receive",
                latency.exchange_to_receive.snapshot(),
            ),
            ("receive_to_publish", latency.receive_to_publish.snapshot()),
        ];
        if stages.iter().all(|(_, (_, _, count))| *count == 0) {
            return Ok(());
        }
        let mut metric = encoder.encode_descriptor(
            "mdi_feed_latency_seconds",
            "The publisher's latency: venue event to arrival, arrival to commit into the ring",
            None,
            prometheus_client::metrics::MetricType::Histogram,
        )?;
        for (stage, (buckets, sum, count)) in &stages {
            let labels = vec![("stage".to_owned(), (*stage).to_owned())];
            metric
                .encode_family(&labels)?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    *sum, *count, buckets, None,
                )?;
        }
        Ok(())
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A status file's key as a metric name part: `lag_ms` in seconds, the rest as they are.
fn status_metrics(c: &mut Collect, prefix: &str, what: &str, file: &Value, base: &Labels) {
    let Some(object) = file.as_object() else {
        return;
    };
    c.gauge(
        &format!("{prefix}_up"),
        &format!("1 while the process writing the {what} status runs"),
        base,
        f64::from(u8::from(object.get("alive") == Some(&Value::Bool(true)))),
    );
    for (key, value) in object {
        let Some(n) = value.as_f64() else {
            continue;
        };
        if matches!(key.as_str(), "pid" | "updated_ns" | "alive") {
            continue;
        }
        let help = format!("{what}: {key} (the status file's `{key}`)");
        if let Some(base_name) = key.strip_suffix("_ns") {
            // a duration: in seconds (e.g. the repair round trip)
            c.gauge(
                &format!("{prefix}_{base_name}_seconds"),
                &help,
                base,
                n * 1e-9,
            );
        } else if GAUGE_KEYS.contains(&key.as_str()) {
            c.gauge(&format!("{prefix}_{key}"), &help, base, n);
        } else {
            c.counter(&format!("{prefix}_{key}"), &help, base, n);
        }
    }
}

/// The metrics of a status document (`mdstat --json`'s) as OpenMetrics text.
pub fn exposition(doc: &Value) -> String {
    let mut c = Collect::default();
    for s in doc["streams"].as_array().into_iter().flatten() {
        let name = s["name"].as_str().unwrap_or("?");
        let stream = labels(&[("stream", name)]);
        let readable = s.get("error").is_none();
        c.gauge(
            "mdi_ring_readable",
            "1 if the ring file opens and is an mdi ring (0: missing, corrupt, foreign)",
            &stream,
            f64::from(u8::from(readable)),
        );
        if !readable {
            continue;
        }
        let writer = &s["writer"];
        let num = |v: &Value| v.as_f64().unwrap_or(0.0);
        c.gauge(
            "mdi_ring_writer_up",
            "1 while the ring's writer holds its lock (0: closed, dead or replaced)",
            &stream,
            f64::from(u8::from(writer["state"] == "alive")),
        );
        c.gauge(
            "mdi_ring_writer_heartbeat_age_seconds",
            "Time since the writer's last heartbeat (it beats once a second, also when idle)",
            &stream,
            num(&writer["heartbeat_age_ms"]) / 1e3,
        );
        c.gauge(
            "mdi_ring_writer_epoch",
            "The writer's epoch (a new writer of the same ring starts the next)",
            &stream,
            num(&writer["epoch"]),
        );
        c.gauge(
            "mdi_ring_capacity_bytes",
            "The ring's capacity",
            &stream,
            num(&s["capacity"]),
        );
        c.counter(
            "mdi_ring_written_bytes",
            "Bytes written to the ring (its commit position)",
            &stream,
            num(&s["commit_position"]),
        );
        c.counter(
            "mdi_ring_records",
            "Records written to the ring (sequence numbers given out)",
            &stream,
            (num(&s["next_seq"]) - 1.0).max(0.0),
        );
        for r in s["readers"].as_array().into_iter().flatten() {
            let reader = labels(&[
                ("stream", name),
                ("reader", r["name"].as_str().unwrap_or("?")),
            ]);
            c.gauge(
                "mdi_reader_up",
                "1 while a registered reader's process runs",
                &reader,
                f64::from(u8::from(r["alive"] == true)),
            );
            c.gauge(
                "mdi_reader_lag_records",
                "Records a registered reader is behind the writer",
                &reader,
                num(&r["lag_records"]),
            );
            c.gauge(
                "mdi_reader_lag_bytes",
                "Bytes a registered reader is behind the writer",
                &reader,
                num(&r["lag_bytes"]),
            );
            c.counter(
                "mdi_reader_lost_records",
                "Records a registered reader lost (the writer lapped it)",
                &reader,
                num(&r["lost"]),
            );
        }
        for (role, prefix, what) in [
            ("send", "mdi_udp_send", "UDP sender"),
            ("recv", "mdi_udp_recv", "UDP receiver"),
        ] {
            let file = &s["udp"][role];
            let channel = file["channel"].as_str().unwrap_or("");
            let base = labels(&[("stream", name), ("channel", channel)]);
            status_metrics(&mut c, prefix, what, file, &base);
        }
        let feed = &s["feed"];
        let mut feed_labels = stream.clone();
        if let Some(venue) = feed["venue"].as_str() {
            feed_labels.push(("venue".to_owned(), venue.to_owned()));
        }
        status_metrics(&mut c, "mdi_feed", "feed", feed, &feed_labels);
        status_metrics(
            &mut c,
            "mdi_archive",
            "archive recorder",
            &s["archive"],
            &stream,
        );
        for conn in feed["connections"].as_array().into_iter().flatten() {
            let l = labels(&[
                ("stream", name),
                ("connection", conn["id"].as_str().unwrap_or("?")),
            ]);
            c.gauge(
                "mdi_feed_connection_lag_seconds",
                "How far the venue's event times trail the receive times on a connection",
                &l,
                num(&conn["lag_ms"]) / 1e3,
            );
            c.gauge(
                "mdi_feed_connection_lagging",
                "1 while a connection lags past the limit",
                &l,
                num(&conn["lagging"]),
            );
        }
    }
    c.encode()
}

/// OpenMetrics text as the Prometheus text format 0.0.4 (what a scraper gets that does
/// not ask for OpenMetrics, and what `promtool check metrics` reads): a counter's HELP
/// and TYPE name its `_total` sample, and there is no `# EOF`.
pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let name = rest.split(' ').next().unwrap_or("");
                if counters.contains(&name) {
                    out.push_str(prefix);
                    out.push_str(name);
                    out.push_str("_total");
                    out.push_str(&rest[name.len()..]);
                } else {
                    out.push_str(line);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// A running metrics endpoint; stops when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// The address it listens on (the port chosen when asked for 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // the thread waits in accept: a connection wakes it to see the flag
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The OpenMetrics text of `streams` of `dir` (every stream when empty), now.
pub fn scrape(dir: &ShmDir, streams: &[String]) -> String {
    match sample(dir, streams) {
        Ok(now) => exposition(&to_json(
            dir,
            &now,
            &now,
            Duration::ZERO,
            crate::wall_clock_ns(),
        )),
        // an unreadable directory: no streams (and the scrape still answers)
        Err(_) => exposition(&serde_json::json!({ "streams": [] })),
    }
}

/// Serves `GET /metrics` on `addr` for the streams of `dir` (every stream when
/// `streams` is empty), on a thread of its own, read at each scrape.
pub fn serve(
    addr: SocketAddr,
    dir: PathBuf,
    streams: Vec<String>,
) -> std::io::Result<MetricsServer> {
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("mdi-metrics".into())
            .spawn(move || {
                let dir = ShmDir::new(&dir);
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                            if let Err(e) = answer(stream, &dir, &streams) {
                                tracing::debug!("metrics: {e}");
                            }
                        }
                        Err(e) => {
                            tracing::warn!("metrics: accepting: {e}");
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                }
            })?
    };
    Ok(MetricsServer {
        addr,
        stop,
        thread: Some(thread),
    })
}

/// One HTTP/1.1 request, one answer, then the connection closes. A request line and
/// headers of at most 8 KiB, read within 2 s.
fn answer(stream: TcpStream, dir: &ShmDir, streams: &[String]) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(std::io::Read::take(stream.try_clone()?, 8 << 10));
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // the headers, up to the blank line: does the scraper take OpenMetrics?
    let mut line = String::new();
    let mut openmetrics = false;
    while reader.read_line(&mut line)? > 2 {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("accept:") && lower.contains("application/openmetrics-text") {
            openmetrics = true;
        }
        line.clear();
    }
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") if openmetrics => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            scrape(dir, streams),
        ),
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            prometheus_text(&scrape(dir, streams)),
        ),
        ("GET", "/") => (
            "200 OK",
            "text/html; charset=utf-8",
            "<html><body><a href=\"/metrics\">metrics</a></body></html>\n".to_owned(),
        ),
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_owned(),
        ),
    };
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_counters_and_ring_levels_become_metrics_with_units_and_totals() {
        let doc = json!({"streams": [
            {
                "name": "ticks",
                "writer": {"state": "alive", "pid": 1, "epoch": 2, "heartbeat_age_ms": 1500},
                "capacity": 1024, "commit_position": 512, "next_seq": 11,
                "readers": [],
                "udp": {
                    "send": {"channel": "udp://239.1.1.1:4000", "alive": true, "pid": 1,
                             "naks": 7, "receivers": 3, "retransmit_bytes": 4096},
                    "recv": null
                },
                "feed": null
            },
            {"name": "junk", "error": "bad magic"}
        ]});
        let om = exposition(&doc);
        assert!(om.ends_with("# EOF\n"));
        for line in [
            "mdi_ring_records_total{stream=\"ticks\"} 10.0",
            "mdi_ring_written_bytes_total{stream=\"ticks\"} 512.0",
            "mdi_ring_writer_heartbeat_age_seconds{stream=\"ticks\"} 1.5",
            "mdi_ring_writer_epoch{stream=\"ticks\"} 2.0",
            "mdi_udp_send_naks_total{stream=\"ticks\",channel=\"udp://239.1.1.1:4000\"} 7.0",
            "mdi_udp_send_retransmit_bytes_total{stream=\"ticks\",channel=\"udp://239.1.1.1:4000\"} 4096.0",
            "mdi_udp_send_receivers{stream=\"ticks\",channel=\"udp://239.1.1.1:4000\"} 3.0",
            "mdi_udp_send_up{stream=\"ticks\",channel=\"udp://239.1.1.1:4000\"} 1.0",
            "mdi_ring_readable{stream=\"junk\"} 0.0",
        ] {
            assert!(om.lines().any(|l| l == line), "{line} in\n{om}");
        }
        assert!(!om.contains("pid"), "a pid is no metric");
        let text = prometheus_text(&om);
        assert!(text.contains("# TYPE mdi_ring_records_total counter\n"));
        assert!(text.contains("# HELP mdi_ring_records_total "));
        assert!(text.contains("# TYPE mdi_ring_capacity_bytes gauge\n"));
        assert!(!text.contains("# EOF"));
    }
}

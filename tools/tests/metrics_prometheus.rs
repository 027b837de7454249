//! Prometheus metrics as operators use them (issue 24): a publisher's rings served over
//! UDP, `mdstat --serve` on its shm dir and `mdrecv --metrics` on the replicas; both
//! expositions pass `promtool check metrics`, a real Prometheus server started on
//! loopback scrapes both, and every metric the Grafana dashboard queries exists.
//! Needs Debian's `prometheus` package (scripts/prepare.sh installs it): without it the
//! test says SKIPPED loudly, and under CI=true fails.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mdi_protocol::records::Trade;
use mdi_protocol::ring::{RingOptions, RingWriter, ShmDir};
use mdi_protocol::udp::Channel;
use mdi_transport::sender::{ServeUntil, UdpSender, UdpSenderOptions};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on 127.0.0.1:port: the body, or `None` if nothing answers yet.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// Scrapes until the exposition has `metric`, for at most 15 s.
fn scrape_until(port: u16, metric: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(body) = http_get(port, "/metrics")
            && body.contains(metric)
        {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "no {metric} on port {port} within 15 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn promtool_check(exposition: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}\n{exposition}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A child killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The metric names a dashboard's queries use (`mdi_...` words of every `expr`).
fn dashboard_metrics(path: &Path) -> Vec<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut names = Vec::new();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    for t in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        exprs.push(t["query"].as_str().unwrap_or("").to_owned());
    }
    for expr in exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("mdi_") {
            let word: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + word.len()..];
            names.push(word);
        }
    }
    names.sort();
    names.dedup();
    names
}

#[test]
fn prometheus_scrapes_a_publisher_and_a_receiver() {
    if !have("promtool") || !have("prometheus") {
        let message = "SKIPPED: prometheus_scrapes_a_publisher_and_a_receiver needs promtool and \
                       prometheus (Debian: apt-get install prometheus; scripts/prepare.sh does)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        eprintln!("\n\n!!! {message}\n");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let publisher = dir.path().join("pub");
    let replicas = dir.path().join("replicas");
    std::fs::create_dir_all(&publisher).unwrap();
    let shm = ShmDir::new(&publisher);
    let mut ring =
        RingWriter::create(&shm, "ticks", &RingOptions::default().capacity(1 << 20)).unwrap();
    for n in 0..100 {
        ring.append_record(&Trade {
            trade_id: n,
            ..Trade::default()
        })
        .unwrap();
    }
    // a strategy registered as a reader (behind by what it has not read)
    let _strategy = mdi_subscriber::Subscriber::builder()
        .shm_dir(&publisher)
        .stream("ticks")
        .from_earliest()
        .register("strategy")
        .open()
        .unwrap();
    // the live feed's status file, as mdpub run writes it next to its rings
    mdi_transport::status::write(
        &publisher,
        "ticks",
        "feed",
        &[
            ("frames".into(), "1200".into()),
            ("trades".into(), "100".into()),
            ("malformed".into(), "2".into()),
            ("gaps".into(), "1".into()),
            ("late_trades".into(), "0".into()),
            (
                "connection".into(),
                "1 lag_ms=12 max_lag_ms=40 lagging=0".into(),
            ),
        ],
        mdi_transport::wall_clock_ns(),
    );
    let channel = Channel::parse(&format!("udp://127.0.0.1:{}", udp_port())).unwrap();
    let mut sender = UdpSender::new(
        channel,
        &shm,
        &["ticks".to_owned()],
        &UdpSenderOptions::default(),
    )
    .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let serving = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            mdi_transport::sender::serve(
                std::slice::from_mut(&mut sender),
                &stop,
                ServeUntil {
                    duration: Some(Duration::from_secs(60)),
                    writers_exit: false,
                },
            )
            .unwrap();
        })
    };
    let (stat_port, recv_port, prom_port) = (free_port(), free_port(), free_port());
    let _stat = Running(
        Command::new(env!("CARGO_BIN_EXE_mdstat"))
            .args(["--serve", &format!("127.0.0.1:{stat_port}"), "--shm-dir"])
            .arg(&publisher)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _recv = Running(
        Command::new(env!("CARGO_BIN_EXE_mdrecv"))
            .args(["--udp", &channel.to_string(), "--metrics"])
            .arg(format!("127.0.0.1:{recv_port}"))
            .arg("--shm-dir")
            .arg(&replicas)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // the publisher's side: ring, UDP sender and feed counters
    let published = scrape_until(stat_port, "mdi_udp_send_data_frames_total");
    promtool_check(&published);
    for metric in [
        "mdi_ring_records_total{stream=\"ticks\"} 100.0",
        "mdi_ring_writer_up{stream=\"ticks\"} 1.0",
        "mdi_feed_malformed_total{stream=\"ticks\"} 2.0",
        "mdi_reader_lag_records{stream=\"ticks\",reader=\"strategy\"} 10",
        "mdi_feed_connection_lag_seconds{stream=\"ticks\",connection=\"1\"} 0.012",
    ] {
        assert!(published.contains(metric), "{metric} in\n{published}");
    }
    // the receiver's: its replica and the UDP receive counters
    let received = scrape_until(recv_port, "mdi_udp_recv_records_total");
    promtool_check(&received);
    assert!(received.contains("mdi_ring_records_total{stream=\"ticks\"}"));
    // a real Prometheus scrapes both
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: mdi\n    static_configs:\n      - targets: ['127.0.0.1:{stat_port}', '127.0.0.1:{recv_port}']\n"
        ),
    )
    .unwrap();
    let _prometheus = Running(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let scraped = loop {
        let answer = http_get(
            prom_port,
            "/api/v1/query?query=count(mdi_ring_records_total)",
        )
        .unwrap_or_default();
        // one series from each endpoint: the publisher's ring and the replica
        if answer.contains("\"value\":[") && answer.contains("\"2\"]") {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape both endpoints within 60 s: {answer}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(scraped.contains("success"), "{scraped}");
    let up = http_get(prom_port, "/api/v1/query?query=sum(up)").unwrap();
    assert!(up.contains("\"2\"]"), "both targets up: {up}");
    // every metric the Grafana dashboard queries exists in the expositions
    let dashboard = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/mdi.json");
    let names = dashboard_metrics(&dashboard);
    assert!(names.len() > 10, "{names:?}");
    let both = format!("{published}\n{received}");
    // (the publisher's latency histograms exist in mdpub only: checked by mdpub's test,
    // `the_demo_serves_prometheus_metrics`; the archive's where a recorder runs: by
    // mdarchive's, `a_running_recorder_shows_in_mdstat_and_its_metrics`)
    for name in names
        .into_iter()
        .filter(|n| !n.starts_with("mdi_feed_latency_seconds") && !n.starts_with("mdi_archive_"))
    {
        assert!(
            both.lines()
                .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))),
            "the dashboard queries {name}, which no endpoint exports"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    serving.join().unwrap();
}

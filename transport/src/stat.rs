//! The status of a shm directory's streams, as `mdstat` shows it and Prometheus scrapes
//! it: every stream — writer, epoch, positions, rates — the readers registered on it
//! with their lag, and the status files of the processes serving, receiving and feeding
//! it. Collected without becoming a reader (headers, readers files and status files
//! only), as one JSON document; [`check`] judges it for health probes.

use std::time::Duration;

use mdi_protocol::ring::{ReaderSlot, RingInfo, ShmDir, inspect, registered_readers};
use serde_json::{Value, json};

/// One stream at one moment.
#[derive(Debug, Clone)]
pub struct StreamSample {
    /// Stream name.
    pub name: String,
    /// The header, or why it could not be read.
    pub info: Result<RingInfo, String>,
    /// Registered readers (empty if none or unreadable).
    pub readers: Vec<ReaderSlot>,
}

/// Takes a sample of `names` (every stream of `dir` when empty).
pub fn sample(dir: &ShmDir, names: &[String]) -> std::io::Result<Vec<StreamSample>> {
    let names = if names.is_empty() {
        dir.streams()?
    } else {
        names.to_vec()
    };
    Ok(names
        .into_iter()
        .map(|name| StreamSample {
            info: inspect(dir, &name).map_err(|e| e.to_string()),
            readers: registered_readers(dir, &name).unwrap_or_default(),
            name,
        })
        .collect())
}

/// The writer's state as operators say it.
pub fn writer_state(info: &RingInfo) -> &'static str {
    if info.superseded {
        "superseded"
    } else if info.writer_alive {
        "alive"
    } else if info.closed_cleanly {
        "closed"
    } else {
        "dead"
    }
}

/// A status file (`<stream>.udp-send`, `.udp-recv`, `.feed`) as JSON: numbers as numbers,
/// `receiver` and `connection` lines gathered in lists (`receiver_list`,
/// `connections`), and whether the writing process still runs.
fn status_file(dir: &ShmDir, stream: &str, role: &str) -> Value {
    let Some(lines) = crate::status::read(dir.path(), stream, role) else {
        return Value::Null;
    };
    let mut object = serde_json::Map::new();
    let mut receivers = Vec::new();
    for (key, value) in lines {
        if key == "receiver" || key == "connection" {
            let mut r = serde_json::Map::new();
            let mut parts = value.split(' ');
            if let Some(id) = parts.next() {
                r.insert("id".into(), json!(id));
            }
            for part in parts {
                if let Some((k, v)) = part.split_once('=') {
                    r.insert(
                        k.into(),
                        v.parse::<u64>().map_or_else(|_| json!(v), |n| json!(n)),
                    );
                }
            }
            receivers.push(Value::Object(r));
            continue;
        }
        let parsed = value
            .parse::<i64>()
            .map_or_else(|_| json!(value), |n| json!(n));
        object.insert(key, parsed);
    }
    match role {
        "udp-send" => {
            object.insert("receiver_list".into(), Value::Array(receivers));
        }
        "feed" => {
            object.insert("connections".into(), Value::Array(receivers));
        }
        _ => {}
    }
    let alive = object
        .get("pid")
        .and_then(Value::as_u64)
        .and_then(|pid| u32::try_from(pid).ok())
        .is_some_and(mdi_protocol::ring::registry::process_alive);
    object.insert("alive".into(), json!(alive));
    Value::Object(object)
}

/// Rates between two samples of the same stream.
fn rates(
    before: Option<&RingInfo>,
    after: &RingInfo,
    elapsed: Duration,
) -> (Option<f64>, Option<f64>) {
    let Some(before) =
        before.filter(|b| b.epoch_start_seq <= after.next_seq && b.created_ns == after.created_ns)
    else {
        return (None, None);
    };
    let secs = elapsed.as_secs_f64().max(1e-9);
    (
        Some(after.next_seq.saturating_sub(before.next_seq) as f64 / secs),
        Some(after.commit.saturating_sub(before.commit) as f64 / secs),
    )
}

/// The JSON document for `mdstat --json`.
pub fn to_json(
    dir: &ShmDir,
    before: &[StreamSample],
    after: &[StreamSample],
    elapsed: Duration,
    now_ns: i64,
) -> Value {
    let streams: Vec<Value> = after
        .iter()
        .map(|s| {
            let info = match &s.info {
                Ok(info) => info,
                Err(error) => return json!({ "name": s.name, "error": error }),
            };
            let prior = before
                .iter()
                .find(|b| b.name == s.name)
                .and_then(|b| b.info.as_ref().ok());
            let (records_per_s, bytes_per_s) = rates(prior, info, elapsed);
            let readers: Vec<Value> = s
                .readers
                .iter()
                .map(|r| {
                    json!({
                        "name": r.name,
                        "pid": r.pid,
                        "alive": r.alive,
                        "position": r.position,
                        "next_seq": r.next_seq,
                        "lag_bytes": info.commit.saturating_sub(r.position),
                        "lag_records": info.next_seq.saturating_sub(r.next_seq),
                        "lost": r.lost,
                        "heartbeat_age_ms": (now_ns - r.heartbeat_ns).max(0) / 1_000_000,
                    })
                })
                .collect();
            json!({
                "name": s.name,
                "path": info.path.display().to_string(),
                "writer": {
                    "state": writer_state(info),
                    "pid": info.writer_pid,
                    "epoch": info.epoch,
                    "started_ns": info.writer_started_ns,
                    "heartbeat_age_ms": (now_ns - info.heartbeat_ns).max(0) / 1_000_000,
                },
                "capacity": info.capacity,
                // a replica's source ring (its id); null for a ring written here
                "replica_of": (info.source_ring_id != 0).then(|| format!("{:#x}", info.source_ring_id)),
                "commit_position": info.commit,
                "next_seq": info.next_seq,
                "epoch_start_seq": info.epoch_start_seq,
                "records_per_s": records_per_s,
                "bytes_per_s": bytes_per_s,
                "readers": readers,
                "udp": {
                    "send": status_file(dir, &s.name, "udp-send"),
                    "recv": status_file(dir, &s.name, "udp-recv"),
                },
                // the live feed writing this ring: late trades, corrections, lag
                "feed": status_file(dir, &s.name, "feed"),
                // the tick archive's recorder of this ring: position and lag
                "archive": status_file(dir, &s.name, "archive"),
            })
        })
        .collect();
    json!({
        "shm_dir": dir.path().display().to_string(),
        "sampled_ms": elapsed.as_millis(),
        "streams": streams,
    })
}

/// What `mdstat --check` holds a stream to.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// A registered, live reader further behind than this many records is a problem.
    pub max_lag_records: Option<u64>,
    /// A writer whose heartbeat is older than this (ms) is stale.
    pub max_age_ms: u64,
    /// A UDP replica that lost more records than this is a problem (default 0: any).
    pub max_lost: u64,
    /// An archive recorder further behind its ring than this many records is a problem
    /// (a recorder that died without removing its status always is).
    pub max_archive_lag: Option<u64>,
}

/// A health problem, most serious first; its exit code is `mdstat --check`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Problem {
    /// No writer: it died, closed, or its heartbeat is older than `--max-age`. Exit 2.
    WriterDown,
    /// The stream cannot be read (missing, corrupt, foreign). Exit 3.
    Unreadable,
    /// A UDP replica lost records it could not repair. Exit 4.
    UdpLoss,
    /// A registered reader lags more than `--max-lag`. Exit 5.
    ReaderLag,
    /// A tick archive's recorder died, or lags more than `--max-archive-lag`. Exit 6.
    ArchiveBehind,
}

impl Problem {
    /// The exit code `mdstat --check` gives for it.
    pub fn exit_code(self) -> i32 {
        match self {
            Self::WriterDown => 2,
            Self::Unreadable => 3,
            Self::UdpLoss => 4,
            Self::ReaderLag => 5,
            Self::ArchiveBehind => 6,
        }
    }
}

/// The problems of every stream in `doc` (`to_json`'s), each with a line that says it.
pub fn check(doc: &Value, limits: &Limits) -> Vec<(Problem, String)> {
    let mut problems = Vec::new();
    let streams = doc["streams"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if streams.is_empty() {
        problems.push((
            Problem::Unreadable,
            format!("no streams in {}", doc["shm_dir"].as_str().unwrap_or("?")),
        ));
    }
    for s in streams {
        let name = s["name"].as_str().unwrap_or("?");
        if let Some(error) = s["error"].as_str() {
            problems.push((Problem::Unreadable, format!("{name}: unreadable: {error}")));
            continue;
        }
        let writer = &s["writer"];
        let state = writer["state"].as_str().unwrap_or("?");
        let age = writer["heartbeat_age_ms"].as_u64().unwrap_or(u64::MAX);
        if state != "alive" {
            problems.push((
                Problem::WriterDown,
                format!(
                    "{name}: writer {state} (pid {}, epoch {})",
                    writer["pid"], writer["epoch"]
                ),
            ));
        } else if age > limits.max_age_ms {
            problems.push((
                Problem::WriterDown,
                format!(
                    "{name}: writer stale: pid {} alive, last heartbeat {age} ms ago (max {} ms)",
                    writer["pid"], limits.max_age_ms
                ),
            ));
        }
        let recv = &s["udp"]["recv"];
        if let Some(lost) = recv["lost_records"].as_u64()
            && lost > limits.max_lost
        {
            problems.push((
                Problem::UdpLoss,
                format!(
                    "{name}: UDP replica from {} lost {lost} records (max {})",
                    recv["channel"].as_str().unwrap_or("?"),
                    limits.max_lost
                ),
            ));
        }
        let archive = &s["archive"];
        if archive.is_object() {
            let lag = archive["lag_records"].as_u64().unwrap_or(0);
            if archive["alive"] != true {
                problems.push((
                    Problem::ArchiveBehind,
                    format!(
                        "{name}: the archive recorder (pid {}) is gone without stopping: {} is not being recorded",
                        archive["pid"],
                        archive["archive"].as_str().unwrap_or("?")
                    ),
                ));
            } else if let Some(max) = limits.max_archive_lag
                && lag > max
            {
                problems.push((
                    Problem::ArchiveBehind,
                    format!(
                        "{name}: the archive recorder (pid {}) lags {lag} records (max {max})",
                        archive["pid"]
                    ),
                ));
            }
        }
        if let Some(max) = limits.max_lag_records {
            for r in s["readers"].as_array().into_iter().flatten() {
                let lag = r["lag_records"].as_u64().unwrap_or(0);
                if r["alive"] == true && lag > max {
                    problems.push((
                        Problem::ReaderLag,
                        format!(
                            "{name}: reader {} (pid {}) lags {lag} records (max {max})",
                            r["name"].as_str().unwrap_or("?"),
                            r["pid"]
                        ),
                    ));
                }
            }
        }
    }
    problems.sort_by_key(|(p, _)| *p);
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(name: &str, state: &str, age: u64) -> Value {
        json!({
            "name": name,
            "writer": {"state": state, "pid": 7, "epoch": 1, "heartbeat_age_ms": age},
            "readers": [],
            "udp": {"send": null, "recv": null},
            "capacity": 1024, "commit_position": 0, "next_seq": 1,
        })
    }

    #[test]
    fn check_names_each_problem_and_orders_them_by_seriousness() {
        let limits = Limits {
            max_lag_records: Some(100),
            max_age_ms: 5_000,
            max_lost: 0,
            max_archive_lag: Some(1_000),
        };
        let healthy = json!({"shm_dir": "/x", "streams": [stream("ticks", "alive", 10)]});
        assert!(check(&healthy, &limits).is_empty());
        let mut lagging = stream("klines", "alive", 10);
        lagging["readers"] = json!([
            {"name": "slow", "pid": 9, "alive": true, "lag_records": 101},
            {"name": "gone", "pid": 8, "alive": false, "lag_records": 10_000},
        ]);
        let mut archived = stream("archived", "alive", 10);
        archived["archive"] =
            json!({"alive": true, "pid": 5, "lag_records": 1_001, "archive": "/a/archived"});
        let mut unarchived = stream("unarchived", "alive", 10);
        unarchived["archive"] =
            json!({"alive": false, "pid": 6, "lag_records": 0, "archive": "/a/unarchived"});
        let mut keeping_up = stream("keeping-up", "alive", 10);
        keeping_up["archive"] =
            json!({"alive": true, "pid": 4, "lag_records": 1_000, "archive": "/a/k"});
        let mut lossy = stream("replica", "alive", 10);
        lossy["udp"]["recv"] = json!({"channel": "udp://1.2.3.4:5", "lost_records": 3});
        let doc = json!({"shm_dir": "/x", "streams": [
            archived,
            unarchived,
            keeping_up,
            lagging,
            lossy,
            stream("stale", "alive", 6_000),
            stream("dead", "dead", 10),
            {"name": "junk", "error": "bad magic"},
        ]});
        let problems = check(&doc, &limits);
        let kinds: Vec<Problem> = problems.iter().map(|(p, _)| *p).collect();
        assert_eq!(
            kinds,
            [
                Problem::WriterDown,
                Problem::WriterDown,
                Problem::Unreadable,
                Problem::UdpLoss,
                Problem::ReaderLag,
                Problem::ArchiveBehind,
                Problem::ArchiveBehind,
            ]
        );
        assert!(
            problems[5].1.contains("lags 1001 records (max 1000)"),
            "{}",
            problems[5].1
        );
        assert!(
            problems[6].1.contains("gone without stopping"),
            "{}",
            problems[6].1
        );
        assert_eq!(problems[6].0.exit_code(), 6);
        assert!(problems[0].1.contains("stale") || problems[1].1.contains("stale"));
        assert!(problems[4].1.contains("slow") && problems[4].1.contains("101"));
        assert_eq!(kinds[0].exit_code(), 2);
        let empty = json!({"shm_dir": "/x", "streams": []});
        assert_eq!(check(&empty, &limits)[0].0, Problem::Unreadable);
    }
}

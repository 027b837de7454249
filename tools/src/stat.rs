//! What `mdstat` prints: the status document of [`mdi_transport::stat`] as a table for
//! people (the JSON is the document itself).

pub use mdi_transport::stat::*;
use serde_json::Value;

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / f64::from(1u32 << 30)),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// The table for people (the stream column as wide as the longest name).
pub fn to_table(json: &Value) -> String {
    let width = json["streams"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str())
        .map(str::len)
        .max()
        .unwrap_or(0)
        .max(16);
    let mut out = format!(
        "{:<width$} {:<24} {:>5} {:>10} {:>14} {:>12} {:>12}\n",
        "STREAM", "WRITER", "EPOCH", "CAPACITY", "POSITION", "NEXT SEQ", "RECORDS/S"
    );
    for s in json["streams"].as_array().into_iter().flatten() {
        let name = s["name"].as_str().unwrap_or("?");
        if let Some(error) = s["error"].as_str() {
            out.push_str(&format!("{name:<width$} unreadable: {error}\n"));
            continue;
        }
        let writer = format!(
            "{} (pid {})",
            s["writer"]["state"].as_str().unwrap_or("?"),
            s["writer"]["pid"]
        );
        let rate = s["records_per_s"]
            .as_f64()
            .map_or_else(|| "-".to_owned(), |r| format!("{r:.0}"));
        out.push_str(&format!(
            "{name:<width$} {writer:<24} {:>5} {:>10} {:>14} {:>12} {:>12}\n",
            s["writer"]["epoch"].to_string(),
            bytes(s["capacity"].as_u64().unwrap_or(0)),
            s["commit_position"].to_string(),
            s["next_seq"].to_string(),
            rate
        ));
        let send = &s["udp"]["send"];
        if send.is_object() {
            out.push_str(&format!(
                "  udp send {} ({}): {} frames, {} retransmitted, {} NAKs, {} unavailable, {} receivers\n",
                send["channel"].as_str().unwrap_or("?"),
                if send["alive"] == true { "live" } else { "ended" },
                send["data_frames"],
                send["retransmit_frames"],
                send["naks"],
                send["unavailable"],
                send["receivers"],
            ));
        }
        let recv = &s["udp"]["recv"];
        if recv.is_object() {
            out.push_str(&format!(
                "  udp recv {} ({}): {} records, {} NAKs, {} duplicates, {} lost, {} malformed\n",
                recv["channel"].as_str().unwrap_or("?"),
                if recv["alive"] == true {
                    "live"
                } else {
                    "ended"
                },
                recv["records"],
                recv["naks"],
                recv["duplicates"],
                recv["lost_records"],
                recv["malformed"],
            ));
        }
        let feed = &s["feed"];
        if feed.is_object() {
            out.push_str(&format!(
                "  feed ({}): {} frames, {} trades; {} late trades ({} in no candle), {} candles corrected\n",
                if feed["alive"] == true { "live" } else { "ended" },
                feed["frames"],
                feed["trades"],
                feed["late_trades"],
                feed["late_unplaced"],
                feed["kline_corrections"],
            ));
            for c in feed["connections"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "    connection {}: lag {} ms (max {} ms){}\n",
                    c["id"].as_str().unwrap_or("?"),
                    c["lag_ms"],
                    c["max_lag_ms"],
                    if c["lagging"] == 1 { ", LAGGING" } else { "" },
                ));
            }
        }
        let archive = &s["archive"];
        if archive.is_object() {
            out.push_str(&format!(
                "  archive {} ({}): {} records, last seq {}, lag {} records ({}), {} gaps ({} records lost), {} segments\n",
                archive["archive"].as_str().unwrap_or("?"),
                if archive["alive"] == true { "live" } else { "ended" },
                archive["records"],
                archive["last_seq"],
                archive["lag_records"],
                bytes(archive["lag_bytes"].as_u64().unwrap_or(0)),
                archive["gaps"],
                archive["lost_records"],
                archive["segments"],
            ));
        }
        for r in s["readers"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  reader {:<24} pid {:<8} {:<5} lag {} / {} records, lost {}, heartbeat {} ms ago\n",
                r["name"].as_str().unwrap_or("?"),
                r["pid"].to_string(),
                if r["alive"] == true { "alive" } else { "dead" },
                bytes(r["lag_bytes"].as_u64().unwrap_or(0)),
                r["lag_records"],
                r["lost"],
                r["heartbeat_age_ms"],
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
    fn the_table_fits_long_stream_names() {
        let long = "binance-spot-btcusdt-depth";
        let doc = json!({"streams": [stream(long, "alive", 1)]});
        let table = to_table(&doc);
        let header = table.lines().next().unwrap();
        let row = table.lines().nth(1).unwrap();
        assert!(row.starts_with(&format!("{long} ")));
        assert_eq!(header.find("WRITER"), row.find("alive"));
    }
}

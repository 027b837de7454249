//! Counters for `mdstat`: each UDP sender and receiver writes its counters per stream to
//! `<shm dir>/<stream>.udp-send` / `.udp-recv`, and a live feed its own to
//! `<shm dir>/<ticks stream>.feed`, about once a second — `key value` lines, replaced
//! atomically (written aside, then renamed) — and removes the file when it ends.
//! Monitoring only: nothing on the data path reads them.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The status file of `stream` for `role` (`udp-send`, `udp-recv`, `feed`).
pub fn path(dir: &Path, stream: &str, role: &str) -> PathBuf {
    dir.join(format!("{stream}.{role}"))
}

/// Writes `lines` (`key value`) as the status of `stream` for `role`, with the writer's
/// pid and the time.
pub fn write(dir: &Path, stream: &str, role: &str, lines: &[(String, String)], now_ns: i64) {
    let target = path(dir, stream, role);
    let aside = dir.join(format!(".{stream}.{role}.{}", std::process::id()));
    let mut text = format!("pid {}\nupdated_ns {now_ns}\n", std::process::id());
    for (key, value) in lines {
        text.push_str(key);
        text.push(' ');
        text.push_str(value);
        text.push('\n');
    }
    let written = std::fs::File::create(&aside)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&aside, &target));
    if let Err(e) = written {
        tracing::debug!("{}: {e}", target.display());
        let _ = std::fs::remove_file(&aside);
    }
}

/// Removes the status file (the sender or receiver ended).
pub fn remove(dir: &Path, stream: &str, role: &str) {
    let _ = std::fs::remove_file(path(dir, stream, role));
}

/// Reads a status file: its `key value` lines in order.
pub fn read(dir: &Path, stream: &str, role: &str) -> Option<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path(dir, stream, role)).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    )
}

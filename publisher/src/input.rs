//! Input files of every venue's replay — Binance history and captures, ITCH files and
//! pcaps — opened by their extension: plain, zstd (`.zst`), gzip (`.gz`), or a
//! data.binance.vision `.zip` (its first `.csv` member, streamed).

use std::io::{BufRead, Read};
use std::path::Path;

/// Opens a history, capture, ITCH or pcap file for reading: plain, zstd-compressed
/// (`.zst`), gzip-compressed (`.gz`), or a data.binance.vision `.zip` (its first `.csv`
/// member).
pub fn open_input(path: &Path) -> std::io::Result<Box<dyn BufRead + Send>> {
    open_counted(path, |r| r)
}

/// An input, the count of its bytes read so far, and its size if known.
pub type CountedInput = (
    Box<dyn BufRead + Send>,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
    Option<u64>,
);

/// Like [`open_input`], and every byte of the (decompressed) input adds to the count
/// returned, for a progress display; with the input's size where it is known (a plain
/// file: its length; compressed: `None`).
pub fn open_input_counted(path: &Path) -> std::io::Result<CountedInput> {
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = std::sync::Arc::clone(&count);
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let total = match extension {
        "zst" | "gz" | "zip" => None,
        _ => std::fs::metadata(path).ok().map(|m| m.len()),
    };
    let input = open_counted(path, move |r| {
        Box::new(Counter {
            inner: r,
            count: counter,
        })
    })?;
    Ok((input, count, total))
}

/// Counts the bytes read into a shared count.
struct Counter {
    inner: Box<dyn Read + Send>,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Read for Counter {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

fn open_counted(
    path: &Path,
    wrap: impl FnOnce(Box<dyn Read + Send>) -> Box<dyn Read + Send>,
) -> std::io::Result<Box<dyn BufRead + Send>> {
    use std::io::BufReader;
    let file = std::fs::File::open(path)?;
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let raw: Box<dyn Read + Send> = match extension {
        "zst" => Box::new(zstd::Decoder::new(file)?),
        "gz" => Box::new(flate2::read::GzDecoder::new(file)),
        "zip" => open_zip_csv(path, file)?,
        _ => Box::new(file),
    };
    Ok(Box::new(BufReader::with_capacity(1 << 16, wrap(raw))))
}

/// The first `.csv` member of a zip archive as a streaming reader (a month of trades
/// unpacks to gigabytes: never into memory).
fn open_zip_csv(path: &Path, file: std::fs::File) -> std::io::Result<Box<dyn Read + Send>> {
    use std::io::{Seek, SeekFrom};
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut archive = zip::ZipArchive::new(file).map_err(|e| invalid(e.to_string()))?;
    let index = (0..archive.len())
        .find(|&i| {
            archive
                .name_for_index(i)
                .is_some_and(|n| n.ends_with(".csv"))
        })
        .ok_or_else(|| invalid("the zip archive holds no .csv file".into()))?;
    let member = archive
        .by_index_raw(index)
        .map_err(|e| invalid(e.to_string()))?;
    let (method, start, len) = (
        member.compression(),
        member.data_start(),
        member.compressed_size(),
    );
    drop(member);
    // a second handle positioned at the member's data owns its own offset
    let mut data = std::fs::File::open(path)?;
    data.seek(SeekFrom::Start(start))?;
    let data = data.take(len);
    match method {
        zip::CompressionMethod::Stored => Ok(Box::new(data)),
        zip::CompressionMethod::Deflated => Ok(Box::new(flate2::read::DeflateDecoder::new(data))),
        other => Err(invalid(format!(
            "zip member compressed with {other}, only stored and deflated are read"
        ))),
    }
}

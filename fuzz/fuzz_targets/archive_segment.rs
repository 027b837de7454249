//! Any bytes as the chunks of an archive segment (after a valid header; the header
//! itself mutated when the first byte says so; the first chunk's CRC made to hold so
//! that its records are parsed): indexed, read, verified, reopened for appending and
//! appended to. Never a panic, never an allocation beyond the file's bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mdi_archive::{
    ArchiveReader, ArchiveRecord, ArchiveStart, CHUNK_HEADER, HEADER_LEN, SegmentHeader,
    SegmentReader, SegmentWriter, check_segment,
};

const CAPACITY: u64 = HEADER_LEN + (CHUNK_HEADER as u64) + (64 << 10) + 4096;

fuzz_target!(|bytes: &[u8]| {
    let Some((&flags, rest)) = bytes.split_first() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let stream = dir.path().join("ticks");
    std::fs::create_dir_all(&stream).unwrap();
    let path = stream.join(format!("{:020}.seg", 1));
    let header = SegmentHeader {
        stream: "ticks".into(),
        epoch: 1,
        first_seq: 1,
        first_time_ns: 0,
        schema_id: mdi_archive::recorder::SCHEMA_ID,
        capacity: CAPACITY,
        sealed: false,
        used: 0,
    };
    let w = SegmentWriter::create(&path, header).unwrap();
    if flags & 1 != 0 {
        w.seal().unwrap();
    } else {
        drop(w);
    }
    let mut file = std::fs::read(&path).unwrap();
    let body = &rest[..rest.len().min((CAPACITY - HEADER_LEN) as usize)];
    let at = HEADER_LEN as usize;
    file[at..at + body.len()].copy_from_slice(body);
    // the first chunk's CRC made to hold over the payload length it claims
    if flags & 2 != 0 && body.len() >= CHUNK_HEADER {
        let len = u32::from_le_bytes(file[at + 4..at + 8].try_into().unwrap()) as usize;
        if let Some(payload) = file.get(at + CHUNK_HEADER..at + CHUNK_HEADER + len) {
            let crc = crc32c::crc32c(payload);
            file[at + 12..at + 16].copy_from_slice(&crc.to_le_bytes());
        }
    }
    // a byte of the header flipped (its CRC then fails: refused, not trusted)
    if flags & 4 != 0 && !rest.is_empty() {
        let i = rest[0] as usize % HEADER_LEN as usize;
        file[i] ^= 1 << (flags >> 5);
    }
    std::fs::write(&path, &file).unwrap();

    if let Ok(mut reader) = SegmentReader::open(&path) {
        let mut n = 0u64;
        let _ = reader.read_chunks(0, |r| {
            n += 1;
            let _ = r.gap_end();
            n < 100_000
        });
        let _ = reader.refresh();
    }
    let _ = check_segment(&path);
    let _ = mdi_archive::verify_stream(dir.path(), "ticks");
    if let Ok(mut reader) = ArchiveReader::open(dir.path(), "ticks", ArchiveStart::Time(5)) {
        for _ in 0..100 {
            if reader.poll(|_| true).unwrap_or(0) == 0 {
                break;
            }
        }
    }
    if let Ok((mut w, recovered)) = SegmentWriter::open_append(&path) {
        let next = recovered.last_seq.map_or(1, |s| s.saturating_add(1));
        let record = ArchiveRecord {
            kind: 16,
            seq: next,
            publish_ns: recovered.last_time_ns.unwrap_or(0),
            body: &[1, 2, 3, 4, 5, 6, 7, 8],
        };
        if next < u64::MAX && w.append(&record).unwrap_or(false) {
            w.flush().unwrap();
            // what was there, and the new record after it, read back
            let reader = SegmentReader::open(&path).unwrap();
            assert_eq!(reader.chunks().len(), recovered.chunks + 1);
        }
    }
});

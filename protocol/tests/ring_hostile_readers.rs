//! Nothing a reader can do to the readers file or the ring file kills or blocks the
//! writer (issue 19, ADR 0012). Every reader opens the readers file read-write (it
//! registers and parks there), so any reader can truncate or overwrite it; and any reader
//! can take a read lock on the ring file it opened read-only.
//!
//! Seen failing before the change: the truncation tests died of SIGBUS at the writer's
//! first append after the truncation; the read-lock test failed with "writer alive".
#![allow(clippy::disallowed_methods)] // tests may use clocks and threads
#![allow(unsafe_code)] // a foreign call: the hostile reader's fcntl lock

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use mdi_protocol::records::RecordKind;
use mdi_protocol::ring::{
    ReadEvent, Registration, RingOptions, RingReader, RingWriter, ShmDir, StartAt, WaitStrategy,
    WriterState,
};
use mdi_protocol::time::WallNs;

const APP: RecordKind = RecordKind::APPLICATION_FIRST;

fn options() -> RingOptions {
    RingOptions::default().capacity(64 << 10)
}

/// Reads records until `count` arrived, parking between polls; bounded in time.
fn read_parked(reader: &mut RingReader, count: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = 0;
    while seen < count && Instant::now() < deadline {
        reader
            .poll(64, |event| {
                if let ReadEvent::Record(_) = event {
                    seen += 1;
                }
            })
            .unwrap();
        if seen < count {
            reader
                .wait(WaitStrategy::Park {
                    timeout: Duration::from_millis(20),
                })
                .unwrap();
        }
    }
    seen
}

/// What a hostile (or buggy) reader can do to the readers file with the write access
/// every reader has.
enum Damage {
    TruncateToZero,
    TruncateShort,
    OverwriteMagic,
}

fn damage_readers_file(shm: &ShmDir, damage: &Damage) {
    let file = OpenOptions::new()
        .write(true)
        .open(shm.readers_path("ticks"))
        .unwrap();
    match damage {
        Damage::TruncateToZero => file.set_len(0).unwrap(),
        Damage::TruncateShort => file.set_len(100).unwrap(),
        Damage::OverwriteMagic => file.write_all_at(b"garbage!", 0).unwrap(),
    }
}

fn writer_survives(damage: &Damage) {
    let dir = tempfile::tempdir().unwrap();
    let shm = ShmDir::new(dir.path());
    let mut writer = RingWriter::create(&shm, "ticks", &options()).unwrap();
    let mut reader = RingReader::open(&shm, "ticks", StartAt::Earliest).unwrap();
    writer.append(APP, &[1; 16]).unwrap();
    // the reader maps the readers file (it parks once) before the damage
    assert_eq!(read_parked(&mut reader, 1), 1);

    damage_readers_file(&shm, damage);
    // every append loads the sleeper count from the readers file: a lost page there
    // used to be SIGBUS
    for i in 0..1000u32 {
        writer.append(APP, &i.to_le_bytes()).unwrap();
    }
    writer.heartbeat(now());
    assert_eq!(
        writer.readers_file_replaced(),
        1,
        "the damage is noticed once"
    );
    // the parked reader (its own mapping of the damaged file) still reads everything
    assert_eq!(read_parked(&mut reader, 1000), 1000);

    // readers can register and park on the fresh file, and the writer wakes them
    Registration::claim(&shm, "ticks", "late", now()).unwrap();
    let mut late = RingReader::open(&shm, "ticks", StartAt::Latest).unwrap();
    let parked = std::thread::spawn(move || read_parked(&mut late, 1));
    let deadline = Instant::now() + Duration::from_secs(10);
    while writer.parked_readers() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        writer.parked_readers(),
        1,
        "the late reader parks on the new file"
    );
    writer.append(APP, &[2; 16]).unwrap();
    assert_eq!(parked.join().unwrap(), 1);
    writer.heartbeat(now());
    assert_eq!(writer.readers_file_replaced(), 1, "a healthy file is kept");
}

#[test]
fn a_readers_file_truncated_to_nothing_does_not_kill_the_writer() {
    writer_survives(&Damage::TruncateToZero);
}

#[test]
fn a_readers_file_cut_short_is_made_anew() {
    writer_survives(&Damage::TruncateShort);
}

#[test]
fn a_readers_file_overwritten_is_made_anew() {
    writer_survives(&Damage::OverwriteMagic);
}

/// A read lock on the ring's first byte — any reader can take one — used to make a new
/// writer believe the old one was alive, so it could never take over.
#[test]
fn a_reader_holding_a_read_lock_does_not_block_a_takeover() {
    let dir = tempfile::tempdir().unwrap();
    let shm = ShmDir::new(dir.path());
    // a writer process that dies without closing (exits without running destructors)
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "writer_that_dies", "--nocapture"])
        .env(CHILD_DIR, dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let position = RingReader::open(&shm, "ticks", StartAt::Latest)
        .unwrap()
        .position();

    let ring = OpenOptions::new()
        .read(true)
        .open(shm.ring_path("ticks"))
        .unwrap();
    read_lock_everything(&ring);

    let reader = RingReader::open(&shm, "ticks", StartAt::Earliest).unwrap();
    assert_eq!(
        reader.writer_status(now()).state,
        WriterState::Dead,
        "a read lock does not pass for a live writer"
    );
    let mut writer = RingWriter::create(&shm, "ticks", &options()).expect("takes over");
    assert_eq!(writer.epoch(), 2);
    assert!(
        writer.position() > position,
        "the ring continues after the old epoch"
    );
    writer.append(APP, &[2; 16]).unwrap();
    assert_eq!(
        reader.writer_status(now()).state,
        WriterState::Alive,
        "readers see the new writer alive although the read lock keeps it from the ring's lock"
    );
    // and a second writer is still refused: the writer lock is not the ring's
    let err = RingWriter::create(&shm, "ticks", &options()).unwrap_err();
    assert!(err.to_string().contains("writer"), "{err}");
    drop(ring);
}

const CHILD_DIR: &str = "MDI_TEST_WRITER_THAT_DIES";

/// The child of the read-lock test (does nothing unless run as that child): writes a
/// record and exits without closing, as a writer that dies.
#[test]
fn writer_that_dies() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let shm = ShmDir::new(std::path::PathBuf::from(dir));
    let mut writer = RingWriter::create(&shm, "ticks", &options()).unwrap();
    writer.append(APP, &[1; 16]).unwrap();
    std::process::exit(0);
}

/// Takes a shared OFD lock on the whole file (what any reader of the ring can do).
fn read_lock_everything(file: &std::fs::File) {
    // SAFETY: all-zero is a valid flock; fcntl reads the struct, which outlives the call.
    let rc = unsafe {
        let mut request: libc::flock = std::mem::zeroed();
        request.l_type = libc::F_RDLCK as libc::c_short;
        request.l_whence = libc::SEEK_SET as libc::c_short;
        libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &request)
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
}

fn now() -> WallNs {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    WallNs(i64::try_from(since.as_nanos()).unwrap())
}

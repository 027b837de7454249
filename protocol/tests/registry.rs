//! Reader registration: slots claimed, published, listed, freed on drop, and reclaimed
//! from readers that died without freeing theirs.

use std::process::Command;

use mdi_protocol::ring::registry::SLOTS;
use mdi_protocol::ring::{
    Position, RegisterError, Registration, RingOptions, RingWriter, Seq, ShmDir, registered_readers,
};

/// Child role: register as "crashed" and exit without freeing the slot.
#[test]
fn child_registers_and_dies() {
    let Ok(dir) = std::env::var("MDI_TEST_REGISTRY_DIR") else {
        return;
    };
    let registration = Registration::claim(&ShmDir::new(dir), "ticks", "crashed", 7).unwrap();
    registration.publish(Position(4096), Seq(10), 0, 8);
    std::mem::forget(registration);
    std::process::exit(0);
}

#[test]
fn readers_register_publish_and_leave() {
    let dir = tempfile::tempdir().unwrap();
    let shm = ShmDir::new(dir.path());
    let _writer =
        RingWriter::create(&shm, "ticks", &RingOptions::default().capacity(4096)).unwrap();
    let a = Registration::claim(&shm, "ticks", "strategy-a", 1).unwrap();
    let b = Registration::claim(&shm, "ticks", "a-name-longer-than-24-bytes-is-cut", 1).unwrap();
    a.publish(Position(1024), Seq(17), 3, 99);
    let readers = registered_readers(&shm, "ticks").unwrap();
    assert_eq!(readers.len(), 2);
    let ra = &readers[0];
    assert_eq!(
        (
            ra.name.as_str(),
            ra.position,
            ra.next_seq,
            ra.lost,
            ra.heartbeat_ns
        ),
        ("strategy-a", 1024, 17, 3, 99)
    );
    assert!(ra.alive && ra.pid == std::process::id());
    assert_eq!(readers[1].name, "a-name-longer-than-24-by");
    drop(a);
    assert_eq!(registered_readers(&shm, "ticks").unwrap().len(), 1);
    drop(b);
    assert!(registered_readers(&shm, "ticks").unwrap().is_empty());
}

#[test]
fn a_dead_readers_slot_is_shown_dead_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let shm = ShmDir::new(dir.path());
    let _writer =
        RingWriter::create(&shm, "ticks", &RingOptions::default().capacity(4096)).unwrap();
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_registers_and_dies",
            "--test-threads=1",
            "--quiet",
        ])
        .env("MDI_TEST_REGISTRY_DIR", dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let readers = registered_readers(&shm, "ticks").unwrap();
    assert_eq!(readers.len(), 1);
    assert_eq!(
        (
            readers[0].name.as_str(),
            readers[0].alive,
            readers[0].position
        ),
        ("crashed", false, 4096)
    );
    // every slot can still be had: the dead one is taken over
    let all: Vec<Registration> = (0..SLOTS)
        .map(|i| Registration::claim(&shm, "ticks", &format!("r{i}"), 1).unwrap())
        .collect();
    assert!(
        registered_readers(&shm, "ticks")
            .unwrap()
            .iter()
            .all(|r| r.alive)
    );
    assert!(matches!(
        Registration::claim(&shm, "ticks", "one-too-many", 1),
        Err(RegisterError::Full(_))
    ));
    drop(all);
}

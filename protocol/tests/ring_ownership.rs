//! A writer writes only through a directory and files that are its own (issue 19): a
//! ring or readers file another user owns (planted, or theirs) is refused, as is a
//! directory where others may replace files (writable by group or others, not sticky).
//! The ownership cases need root to give a file away (without it they say so loudly,
//! and fail under `CI=true`).

use std::os::unix::fs::PermissionsExt;

use mdi_protocol::ring::{RingOptions, RingWriter, ShmDir, WriterCreateError};

fn options() -> RingOptions {
    RingOptions::default().capacity(64 << 10)
}

#[test]
fn a_directory_others_can_write_is_refused_unless_sticky() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = RingWriter::create(&ShmDir::new(dir.path()), "ticks", &options()).unwrap_err();
    assert!(matches!(err, WriterCreateError::NotOwned { .. }), "{err}");
    assert!(err.to_string().contains("replace files"), "{err}");
    // as /dev/shm: world-writable with the sticky bit
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    RingWriter::create(&ShmDir::new(dir.path()), "ticks", &options()).unwrap();
}

#[test]
fn a_ring_or_readers_file_of_another_user_is_not_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let shm = ShmDir::new(dir.path());
    drop(RingWriter::create(&shm, "ticks", &options()).unwrap());
    for file in ["ticks.ring", "ticks.readers"] {
        let path = dir.path().join(file);
        if std::os::unix::fs::chown(&path, Some(65_534), None).is_err() {
            let message = "SKIPPED a_ring_or_readers_file_of_another_user_is_not_taken_over: \
                           needs root to give a file to another user";
            eprintln!("{message}");
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
            return;
        }
        let err = RingWriter::create(&shm, "ticks", &options()).unwrap_err();
        assert!(
            matches!(err, WriterCreateError::NotOwned { .. }),
            "{file}: {err}"
        );
        assert!(err.to_string().contains("uid 65534"), "{err}");
        let me = std::fs::metadata(dir.path()).map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.uid()
        });
        std::os::unix::fs::chown(&path, me.ok(), None).unwrap();
    }
    // its own again: taken over
    RingWriter::create(&shm, "ticks", &options()).unwrap();
}

//! A ring on a full tmpfs is refused when it is created, with a message that says so —
//! it never dies of SIGBUS at a later append (ADR 0010). The test runs itself again in a
//! private mount namespace with a 1 MiB tmpfs of its own (root; without it, it says so
//! loudly, and fails under `CI=true`).

use std::process::Command;

use mdi_protocol::records::RecordKind;
use mdi_protocol::ring::{RingOptions, RingWriter, ShmDir};

const INNER: &str = "MDI_TEST_SMALL_TMPFS";

#[test]
fn a_ring_that_does_not_fit_its_tmpfs_is_refused_at_creation() {
    if let Ok(dir) = std::env::var(INNER) {
        return inside_the_small_tmpfs(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "mount -t tmpfs -o size=1m mdi-test {dir} && {INNER}={dir} exec {exe} --exact \
         a_ring_that_does_not_fit_its_tmpfs_is_refused_at_creation --nocapture",
        dir = dir.path().display(),
        exe = exe.display()
    );
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output();
    let output = match output {
        Ok(o) if o.status.code() != Some(1) || !stderr_says_no_privilege(&o.stderr) => o,
        _ => {
            let message = "SKIPPED a_ring_that_does_not_fit_its_tmpfs_is_refused_at_creation: \
                           needs root to mount a tmpfs in a private mount namespace";
            eprintln!("{message}");
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
            return;
        }
    };
    assert!(
        output.status.success(),
        "inside the 1 MiB tmpfs: {}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn stderr_says_no_privilege(stderr: &[u8]) -> bool {
    let text = String::from_utf8_lossy(stderr);
    text.contains("Operation not permitted") || text.contains("permission denied")
}

/// In the namespace: a 4 MiB ring does not fit and is refused with the reason; a 256 KiB
/// one fits, and is written round many times (every page of it touched) without a fault.
fn inside_the_small_tmpfs(dir: &str) {
    let shm = ShmDir::new(dir);
    let err = RingWriter::create(&shm, "big", &RingOptions::default().capacity(4 << 20))
        .expect_err("a 4 MiB ring in a 1 MiB tmpfs");
    let message = err.to_string();
    assert!(message.contains("no room for a ring"), "{message}");
    assert!(
        !shm.ring_path("big").exists(),
        "nothing left behind: {message}"
    );
    let mut ring =
        RingWriter::create(&shm, "small", &RingOptions::default().capacity(256 << 10)).unwrap();
    let body = [7u8; 1000];
    for _ in 0..4_000 {
        ring.append(RecordKind::APPLICATION_FIRST, &body).unwrap();
    }
    assert!(
        ring.position().get() > 8 * (256 << 10),
        "wrapped many times"
    );
}

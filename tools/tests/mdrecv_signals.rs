//! `mdrecv` stopped by SIGTERM or SIGINT shuts down cleanly: exit status 0, its summary
//! printed, no error — also when the signal lands while it waits in a receive (it used to
//! end with "Interrupted system call (os error 4)" as its error). Repeated, since where
//! the signal lands is chance.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[test]
fn sigterm_and_sigint_stop_mdrecv_cleanly_every_time() {
    for round in 0..6 {
        let signal = if round % 2 == 0 {
            Signal::SIGTERM
        } else {
            Signal::SIGINT
        };
        let shm = tempfile::tempdir().unwrap();
        let port = 47_000 + (std::process::id() % 1_000) as u16 + round * 7;
        let mut child = Command::new(env!("CARGO_BIN_EXE_mdrecv"))
            .args(["--udp", &format!("udp://127.0.0.1:{port}"), "--shm-dir"])
            .arg(shm.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mdrecv");
        // let it join and settle into its receive loop
        std::thread::sleep(Duration::from_millis(300 + 40 * u64::from(round)));
        kill(Pid::from_raw(child.id() as i32), signal).expect("signal mdrecv");
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "mdrecv did not stop on {signal}");
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut log = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        assert!(status.success(), "mdrecv on {signal}: {status}\n{log}");
        assert!(!log.contains("Interrupted"), "{log}");
    }
}

//! Network namespaces for the tools' integration tests: multicast for real, never on the
//! host's interfaces. Creating one needs root; without it a test says so loudly, and
//! fails when `CI=true`.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use mdi_protocol::ring::{ReadEvent, RingReader, ShmDir, StartAt};

/// A record as a replica must reproduce it: position, sequence, kind, body (epoch
/// starts as kind 1 with the epoch as body).
pub type Seen = (u64, u64, u16, Vec<u8>);

/// Every record of ring `stream` in `dir`, from the earliest.
pub fn stream_contents(dir: &Path, stream: &str) -> Vec<Seen> {
    let mut reader = RingReader::open(&ShmDir::new(dir), stream, StartAt::Earliest).unwrap();
    let mut out = Vec::new();
    while !reader.caught_up() {
        reader
            .poll(1024, |e| match e {
                ReadEvent::Record(r) => {
                    out.push((r.position.get(), r.seq.get(), r.kind.0, r.body.to_vec()))
                }
                ReadEvent::EpochStarted { seq, epoch, .. } => {
                    out.push((0, seq.get(), 1, epoch.to_le_bytes().to_vec()))
                }
                ReadEvent::Lost { from_seq, to_seq } => panic!("loss {from_seq}..{to_seq}"),
            })
            .unwrap();
    }
    out
}

pub fn run(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// A network namespace, deleted (with its links and nftables tables) on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn create(suffix: &str) -> Option<Self> {
        let name = format!("mdi-test-{}-{suffix}", std::process::id());
        if !run("ip", &["netns", "add", &name]) {
            return None;
        }
        let ns = Self(name);
        assert!(run("ip", &["-n", &ns.0, "link", "set", "lo", "up"]));
        Some(ns)
    }

    /// A namespace whose loopback carries multicast.
    pub fn loopback_multicast(suffix: &str) -> Option<Self> {
        let ns = Self::create(suffix)?;
        assert!(run(
            "ip",
            &["-n", &ns.0, "route", "add", "224.0.0.0/4", "dev", "lo"]
        ));
        Some(ns)
    }

    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.0]).arg(program);
        command
    }

    /// nftables in this namespace: drops `percent` % of what arrives matching `matching`
    /// (nft words, e.g. `["udp", "dport", "40124"]`), counted, on the input hook.
    pub fn drop_on_input(&self, matching: &[&str], percent: u32) {
        assert!(
            run("nft", &["--version"]),
            "nftables (nft) is needed: apt-get install nftables (.ci/run installs it)"
        );
        let nft = |args: &[&str]| {
            let mut all = vec!["netns", "exec", self.0.as_str(), "nft"];
            all.extend_from_slice(args);
            assert!(run("ip", &all), "nft {args:?}");
        };
        nft(&["add", "table", "inet", "mdi_loss"]);
        nft(&[
            "add",
            "chain",
            "inet",
            "mdi_loss",
            "input",
            "{ type filter hook input priority 0; }",
        ]);
        let percent = percent.to_string();
        let mut rule = vec!["add", "rule", "inet", "mdi_loss", "input"];
        rule.extend_from_slice(matching);
        rule.extend_from_slice(&[
            "numgen", "random", "mod", "100", "<", &percent, "counter", "drop",
        ]);
        nft(&rule);
    }

    /// The nftables ruleset of this namespace (its counters).
    pub fn ruleset(&self) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft", "list", "ruleset"])
            .output()
            .expect("nft list ruleset");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Says loudly that `test` cannot run without namespaces; fails under `CI=true`.
pub fn no_namespaces(test: &str) {
    let message = format!("SKIPPED {test}: cannot create a network namespace (needs root)");
    eprintln!("{message}");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{message} — required in CI"
    );
}

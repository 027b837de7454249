//! `mdbench ring` end to end with small counts: every implementation runs and prints a
//! well-formed RESULT line (figures are not checked: speed is measured, not asserted).

use std::process::Command;

fn fields(line: &str) -> Vec<(&str, &str)> {
    line.split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .collect()
}

/// Runs mdbench with `args`; its stdout, after checking it succeeded.
fn run_mdbench(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_mdbench"))
        .args(args)
        .output()
        .expect("run mdbench");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "mdbench failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn ring_scenarios_print_result_lines_for_every_implementation() {
    let stdout = run_mdbench(&[
        "ring",
        "--sizes",
        "64",
        "--readers",
        "1,2",
        "--messages",
        "2000",
        "20000",
    ]);
    let results: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("RESULT "))
        .collect();
    let peers: &[&str] = if cfg!(feature = "iceoryx2") {
        &["mdi", "iceoryx2", "tokio-broadcast", "crossbeam"]
    } else {
        &["mdi", "tokio-broadcast", "crossbeam"]
    };
    for &implementation in peers {
        for readers in ["1", "2"] {
            let latency = results.iter().find(|l| {
                let f = fields(l);
                f.contains(&("scenario", "ring-latency"))
                    && f.contains(&("impl", implementation))
                    && f.contains(&("readers", readers))
            });
            let latency = latency.unwrap_or_else(|| {
                panic!("no latency line for {implementation}/{readers}:\n{stdout}")
            });
            for key in ["size", "p50_ns", "p99_ns", "p999_ns", "max_ns"] {
                let value = fields(latency)
                    .into_iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v);
                assert!(
                    value.is_some_and(|v| v.parse::<u64>().is_ok()),
                    "{key} in {latency}"
                );
            }
            let throughput = results.iter().find(|l| {
                let f = fields(l);
                f.contains(&("scenario", "ring-throughput"))
                    && f.contains(&("impl", implementation))
                    && f.contains(&("readers", readers))
            });
            let throughput = throughput
                .unwrap_or_else(|| panic!("no throughput line for {implementation}/{readers}"));
            let rate = fields(throughput)
                .into_iter()
                .find(|(k, _)| *k == "msgs_per_s")
                .map(|(_, v)| v);
            assert!(
                rate.is_some_and(|v| v.parse::<f64>().is_ok_and(|r| r > 0.0)),
                "{throughput}"
            );
        }
    }
    assert!(results.iter().any(|l| l.contains("impl=floor")), "{stdout}");
}

#[test]
fn bad_arguments_are_refused_with_a_message() {
    let output = Command::new(env!("CARGO_BIN_EXE_mdbench"))
        .args(["ring", "--sizes", "abc"])
        .output()
        .expect("run mdbench");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid value"));
}

/// The Aeron peer (feature `aeron`, built in CI after scripts/prepare.sh aeron): it
/// runs and reports latency and throughput with every message delivered.
#[cfg(feature = "aeron")]
#[test]
fn udp_aeron_peer_prints_latency_and_throughput() {
    let stdout = run_mdbench(&["udp", "--quick", "--impl", "aeron"]);
    for scenario in ["udp-latency", "udp-throughput"] {
        let line = stdout
            .lines()
            .find(|l| l.contains(&format!("scenario={scenario} impl=aeron")))
            .unwrap_or_else(|| panic!("no aeron {scenario} line:\n{stdout}"));
        let delivered = fields(line)
            .into_iter()
            .find(|(k, _)| *k == "delivered")
            .and_then(|(_, v)| v.parse::<u64>().ok());
        let expected = if scenario == "udp-latency" {
            10_000
        } else {
            1_000_000
        };
        assert_eq!(delivered, Some(expected), "{line}");
    }
}

//! What every scenario shares: a clock all processes agree on, core pinning, latency
//! histograms, RESULT lines, and child processes driven over stdin/stdout.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;

/// CLOCK_MONOTONIC in ns: one clock for every process on the host (vDSO, no syscall).
#[inline]
pub fn now_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available");
    ts.tv_sec().unsigned_abs() * 1_000_000_000 + ts.tv_nsec().unsigned_abs()
}

/// Spins until `deadline_ns` (CLOCK_MONOTONIC).
#[inline]
pub fn spin_until(deadline_ns: u64) {
    while now_ns() < deadline_ns {
        std::hint::spin_loop();
    }
}

/// Number of online cores (not the calling thread's affinity mask, which pinning narrows).
pub fn cores() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN)
        .ok()
        .flatten()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(1)
        .max(1)
}

/// Pins the calling thread to `core` (modulo the online cores).
pub fn pin(core: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(core % cores()).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

/// A latency histogram in ns (1 ns to 10 s, 3 significant digits).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("valid histogram bounds")
}

/// Percentiles of a latency histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Latency {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub count: u64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        Self {
            p50: h.value_at_quantile(0.50),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            count: h.len(),
        }
    }

    /// As `key=value` fields for a child's report line.
    pub fn report(&self) -> String {
        format!(
            "p50={} p99={} p999={} max={} count={}",
            self.p50, self.p99, self.p999, self.max, self.count
        )
    }

    pub fn parse(line: &str) -> Result<Self> {
        Ok(Self {
            p50: field(line, "p50")?,
            p99: field(line, "p99")?,
            p999: field(line, "p999")?,
            max: field(line, "max")?,
            count: field(line, "count")?,
        })
    }

    /// The worse of two readers' figures, field by field.
    pub fn worst(self, other: Self) -> Self {
        Self {
            p50: self.p50.max(other.p50),
            p99: self.p99.max(other.p99),
            p999: self.p999.max(other.p999),
            max: self.max.max(other.max),
            count: self.count.min(other.count),
        }
    }
}

/// Reads `key=<u64>` from a report line.
pub fn field(line: &str, key: &str) -> Result<u64> {
    let prefix = format!("{key}=");
    let value = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(prefix.as_str()))
        .with_context(|| format!("no {key}= in {line:?}"))?;
    value
        .parse()
        .with_context(|| format!("{key}={value} is not a number"))
}

/// A duration in ns.
pub fn nanos(elapsed: std::time::Duration) -> u64 {
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
}

/// Records per second, as a RESULT field.
pub fn msgs_per_s(delivered: u64, elapsed_ns: u64) -> String {
    format!("{:.0}", delivered as f64 * 1e9 / elapsed_ns.max(1) as f64)
}

/// One `RESULT` line: `RESULT scenario=.. impl=.. k=v ...`.
pub struct ResultLine {
    text: String,
}

impl ResultLine {
    pub fn new(scenario: &str, implementation: &str) -> Self {
        Self {
            text: format!("RESULT scenario={scenario} impl={implementation}"),
        }
    }

    pub fn field(mut self, key: &str, value: impl std::fmt::Display) -> Self {
        let _ = write!(self.text, " {key}={value}");
        self
    }

    pub fn latency(self, l: Latency) -> Self {
        self.field("p50_ns", l.p50)
            .field("p99_ns", l.p99)
            .field("p999_ns", l.p999)
            .field("max_ns", l.max)
    }

    pub fn print(self) {
        println!("{}", self.text);
    }
}

/// A child `mdbench` process playing one role; it reports on stdout lines `MDI ...` and
/// takes commands on stdin.
pub struct Role {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    name: String,
}

impl Role {
    pub fn spawn(args: &[String]) -> Result<Self> {
        Self::spawn_in(None, args)
    }

    /// A role in network namespace `netns` (`ip netns exec`), or here.
    pub fn spawn_in(netns: Option<&str>, args: &[String]) -> Result<Self> {
        let exe = std::env::current_exe().context("locating mdbench")?;
        let mut command = match netns {
            Some(ns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", ns]).arg(exe);
                command
            }
            None => Command::new(exe),
        };
        let mut child = command
            .arg("child")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning a benchmark process")?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().context("child stdout")?);
        Ok(Self {
            child,
            stdin,
            stdout,
            name: args.join(" "),
        })
    }

    /// Waits for a report line starting with `prefix`.
    pub fn expect(&mut self, prefix: &str) -> Result<String> {
        loop {
            let mut line = String::new();
            if self.stdout.read_line(&mut line)? == 0 {
                bail!(
                    "benchmark process `{}` exited before reporting {prefix:?}",
                    self.name
                );
            }
            if let Some(report) = line.trim_end().strip_prefix("MDI ")
                && report.starts_with(prefix)
            {
                return Ok(report.to_owned());
            }
        }
    }

    pub fn send(&mut self, command: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("child stdin closed")?;
        writeln!(stdin, "{command}")?;
        stdin.flush()?;
        Ok(())
    }

    pub fn finish(mut self) -> Result<()> {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("benchmark process `{}` failed: {status}", self.name);
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("benchmark process `{}` did not exit", self.name);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// In a child: report a line to the parent.
pub fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "MDI {line}");
    let _ = out.flush();
}

/// In a child: block until the parent sends `command`.
pub fn await_command(command: &str) -> Result<()> {
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        line.clear();
        if stdin.lock().read_line(&mut line)? == 0 {
            bail!("parent closed stdin before sending {command:?}");
        }
        if line.trim() == command {
            return Ok(());
        }
    }
}

//! Kernel-bypass receive through DPDK (the `dpdk` feature): the Environment Abstraction
//! Layer started with the caller's arguments, one port, one receive queue, frames taken
//! a burst at a time and parsed in user space (Ethernet / IPv4 / UDP, filtered on the
//! feed's group and port by the caller: [`mdi_itch::pcap::udp_datagram`]).
//!
//! Files replay through DPDK's `net_pcap` virtual device ([`replay_eal_args`]); live
//! traffic through any port DPDK drives (a NIC bound to vfio-pci, or `net_af_packet`,
//! `net_af_xdp` on a kernel interface).
//!
//! DPDK's burst receive and mbuf accessors are inline C; the small shim in
//! `publisher/dpdk/shim.c` wraps them and bindgen binds the shim. The unsafe code of the
//! binding is in this module only.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::replay::{FrameError, FrameSource};
use mdi_itch::pcap::Frame;

#[allow(
    dead_code,
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    missing_debug_implementations,
    unreachable_pub,
    clippy::all
)]
mod ffi {
    include!(concat!(env!("OUT_DIR"), "/dpdk_shim.rs"));
}

/// A DPDK call failed.
#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    /// `rte_eal_init` refused the arguments or the machine.
    #[error("DPDK EAL initialisation failed ({reason}); arguments: {args}")]
    Eal {
        /// DPDK's reason.
        reason: String,
        /// The arguments given.
        args: String,
    },
    /// The EAL runs once per process.
    #[error(
        "DPDK's EAL is already running in this process with other arguments ({0}); one DPDK configuration per process"
    )]
    EalAgain(String),
    /// No such port.
    #[error(
        "no DPDK port {0:?} (ports available: {1}); check the --vdev or the PCI device in the EAL arguments"
    )]
    NoPort(String, u16),
    /// The packet pool.
    #[error(
        "creating the DPDK packet pool of {count} buffers failed: {reason} (with --no-huge, raise -m)"
    )]
    Pool {
        /// Buffers asked for.
        count: u32,
        /// DPDK's reason.
        reason: String,
    },
    /// Configuring or starting the port.
    #[error("starting DPDK port {port}: {reason}")]
    Port {
        /// The port id.
        port: u16,
        /// DPDK's reason.
        reason: String,
    },
    /// An argument with a NUL byte.
    #[error("EAL argument {0:?} contains a NUL byte")]
    Argument(String),
}

/// What to open: EAL arguments and the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpdkConfig {
    /// EAL arguments (without the program name), e.g. `-l 0 --no-huge --no-pci
    /// --vdev net_pcap0,rx_pcap=day.pcap`.
    pub eal_args: Vec<String>,
    /// The port's device name (`net_pcap0`, `0000:3b:00.0`); `None`: the first port.
    pub port: Option<String>,
    /// Receive descriptors (rounded by the driver).
    pub rx_descriptors: u16,
    /// Packet buffers in the pool.
    pub pool_buffers: u32,
    /// Frames asked for per burst (at most 64 are taken).
    pub burst: u16,
}

impl Default for DpdkConfig {
    fn default() -> Self {
        Self {
            eal_args: Vec::new(),
            port: None,
            rx_descriptors: 1024,
            pool_buffers: 8191,
            burst: 32,
        }
    }
}

/// EAL arguments to replay `pcap` through the `net_pcap` virtual device, without huge
/// pages or PCI, with no shared config (no files under /var/run/dpdk), on lcore 0.
pub fn replay_eal_args(pcap: &Path) -> Vec<String> {
    let mut args = base_eal_args();
    args.push(format!("--vdev=net_pcap0,rx_pcap={}", pcap.display()));
    args
}

/// The EAL arguments every mdi DPDK process starts from: lcore 0, no huge pages, no PCI
/// scan, no shared-config files, no telemetry socket, 256 MB, warnings only. Add a
/// `--vdev` or `-a PCI`.
pub fn base_eal_args() -> Vec<String> {
    eal_args(0, 256)
}

/// [`base_eal_args`] on `lcore` with `memory_mb` of (non-huge) memory.
pub fn eal_args(lcore: usize, memory_mb: u32) -> Vec<String> {
    vec![
        "-l".into(),
        lcore.to_string(),
        "--no-huge".into(),
        "--no-pci".into(),
        "--no-shconf".into(),
        "--no-telemetry".into(),
        "-m".into(),
        memory_mb.to_string(),
        "--log-level=*:warning".into(),
    ]
}

/// The arguments the EAL was started with in this process, if it was.
static EAL: Mutex<Option<Vec<String>>> = Mutex::new(None);

fn dpdk_error() -> String {
    // SAFETY: both calls only read DPDK's per-thread errno and its static message table.
    let text = unsafe { CStr::from_ptr(ffi::mdi_dpdk_strerror(ffi::mdi_dpdk_errno())) };
    text.to_string_lossy().into_owned()
}

fn errno_text(code: c_int) -> String {
    // SAFETY: rte_strerror returns a static or thread-local string for any code.
    let text = unsafe { CStr::from_ptr(ffi::mdi_dpdk_strerror(code.abs())) };
    text.to_string_lossy().into_owned()
}

fn start_eal(args: &[String]) -> Result<(), DpdkError> {
    let mut started = EAL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(running) = started.as_ref() {
        return if running == args {
            Ok(())
        } else {
            Err(DpdkError::EalAgain(running.join(" ")))
        };
    }
    let owned = std::iter::once("mdi")
        .chain(args.iter().map(String::as_str))
        .map(|a| CString::new(a).map_err(|_| DpdkError::Argument(a.to_owned())))
        .collect::<Result<Vec<_>, _>>()?;
    // rte_eal_init may permute argv: give it a copy of the pointers
    let mut argv: Vec<*mut c_char> = owned.iter().map(|a| a.as_ptr().cast_mut()).collect();
    let argc = c_int::try_from(argv.len()).unwrap_or(c_int::MAX);
    // SAFETY: argv holds argc pointers to NUL-terminated strings that outlive the call
    // (`owned`); the EAL is initialised at most once (guarded by EAL's lock).
    let ret = unsafe { ffi::mdi_dpdk_eal_init(argc, argv.as_mut_ptr()) };
    if ret < 0 {
        return Err(DpdkError::Eal {
            reason: dpdk_error(),
            args: args.join(" "),
        });
    }
    *started = Some(args.to_vec());
    Ok(())
}

/// Most frames taken per burst.
const MAX_BURST: usize = 64;

/// One started DPDK port receiving on queue 0.
#[derive(Debug)]
pub struct DpdkPort {
    port: u16,
    pool: *mut ffi::rte_mempool,
    mbufs: [*mut ffi::rte_mbuf; MAX_BURST],
    burst: u16,
    /// Frames of the current burst: `mbufs[next..count]` not yet handed out.
    count: usize,
    next: usize,
    /// Nanoseconds per unit of the driver's receive timestamps, when they are known to
    /// be times since the Unix epoch (net_pcap: the capture time in µs); `None`: frames
    /// are stamped with the caller's clock.
    timestamp_unit_ns: Option<u64>,
    driver: String,
    /// Replays: the input has ended after this long without a frame.
    idle_end: Option<Duration>,
    idle_since: Option<Instant>,
    /// When the current burst was received (frames handed out one at a time).
    burst_ns: i64,
    counters: DpdkCounters,
}

// SAFETY: a DpdkPort is the only user of its port's queue 0 and of its pool's buffers
// in its burst; DPDK allows a queue to be polled from any one thread at a time (non-EAL
// threads take buffers without a per-lcore cache), and `&mut self` serialises every call.
unsafe impl Send for DpdkPort {}

/// What a port received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DpdkCounters {
    /// Frames handed out.
    pub frames: u64,
    /// Bursts that returned frames.
    pub bursts: u64,
    /// Frames in more than one buffer (larger than a buffer: skipped, counted).
    pub segmented: u64,
    /// The driver's count of frames missed (no free descriptor).
    pub missed: u64,
    /// The driver's receive errors.
    pub errors: u64,
    /// The driver found no free buffer.
    pub no_buffer: u64,
}

impl DpdkPort {
    /// Starts the EAL (once per process) and the port `config` names.
    pub fn open(config: &DpdkConfig) -> Result<Self, DpdkError> {
        start_eal(&config.eal_args)?;
        let port = match &config.port {
            Some(name) => {
                let c_name =
                    CString::new(name.as_str()).map_err(|_| DpdkError::Argument(name.clone()))?;
                let mut port = 0u16;
                // SAFETY: c_name is NUL-terminated and outlives the call; port is a valid
                // place for the result.
                let ret = unsafe { ffi::mdi_dpdk_port_by_name(c_name.as_ptr(), &mut port) };
                if ret != 0 {
                    // SAFETY: no arguments; reads the ethdev table.
                    return Err(DpdkError::NoPort(name.clone(), unsafe {
                        ffi::mdi_dpdk_port_count()
                    }));
                }
                port
            }
            None => {
                // SAFETY: no arguments; reads the ethdev table.
                if unsafe { ffi::mdi_dpdk_port_count() } == 0 {
                    return Err(DpdkError::NoPort("(first)".into(), 0));
                }
                0
            }
        };
        let name = CString::new(format!("mdi_rx_{port}")).expect("no NUL in the pool name");
        // 2048 bytes of data plus DPDK's headroom: any Ethernet frame up to 1500 MTU
        // fits one buffer
        // SAFETY: name is NUL-terminated and outlives the call (DPDK copies it).
        let pool =
            unsafe { ffi::mdi_dpdk_pool_create(name.as_ptr(), config.pool_buffers, 2048 + 128) };
        if pool.is_null() {
            return Err(DpdkError::Pool {
                count: config.pool_buffers,
                reason: dpdk_error(),
            });
        }
        let mut timestamps = 0;
        let mut driver = [0 as c_char; 64];
        // SAFETY: pool is a live packet pool; timestamps and driver (64 bytes) are valid
        // places for the answers.
        let ret = unsafe {
            ffi::mdi_dpdk_port_start(
                port,
                pool,
                config.rx_descriptors,
                &mut timestamps,
                driver.as_mut_ptr(),
                driver.len() as u32,
            )
        };
        if ret != 0 {
            // SAFETY: the pool was created above and no port uses it.
            unsafe { ffi::mdi_dpdk_pool_free(pool) };
            return Err(DpdkError::Port {
                port,
                reason: errno_text(ret),
            });
        }
        // SAFETY: the shim wrote a NUL-terminated name into the zeroed buffer.
        let driver = unsafe { CStr::from_ptr(driver.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        // a timestamp's unit and origin are the driver's: trusted where known
        let timestamp_unit_ns = match driver.as_str() {
            "net_pcap" if timestamps != 0 => Some(1_000),
            _ => None,
        };
        tracing::info!(
            port,
            driver,
            timestamps = timestamps != 0,
            "DPDK port started"
        );
        Ok(Self {
            port,
            pool,
            mbufs: [std::ptr::null_mut(); MAX_BURST],
            burst: config.burst.clamp(1, MAX_BURST as u16),
            count: 0,
            next: 0,
            timestamp_unit_ns,
            driver,
            idle_end: None,
            idle_since: None,
            burst_ns: 0,
            counters: DpdkCounters::default(),
        })
    }

    /// For replays (`net_pcap`): the input has ended once no frame came for `idle`.
    pub fn end_when_idle(mut self, idle: Duration) -> Self {
        self.idle_end = Some(idle);
        self
    }

    /// Whether frames carry the driver's receive (capture) time; else they are stamped
    /// with the caller's clock.
    pub fn has_timestamps(&self) -> bool {
        self.timestamp_unit_ns.is_some()
    }

    /// The port's driver (`net_pcap`, `net_af_packet`, `mlx5_pci`, …).
    pub fn driver(&self) -> &str {
        &self.driver
    }

    /// What was received, with the driver's counters.
    pub fn counters(&self) -> DpdkCounters {
        let mut counters = self.counters;
        let (mut packets, mut missed, mut errors, mut no_buffer) = (0, 0, 0, 0);
        // SAFETY: the port is started; the four are valid places for the counters.
        let ret = unsafe {
            ffi::mdi_dpdk_port_stats(
                self.port,
                &mut packets,
                &mut missed,
                &mut errors,
                &mut no_buffer,
            )
        };
        if ret == 0 {
            counters.missed = missed;
            counters.errors = errors;
            counters.no_buffer = no_buffer;
        }
        counters
    }

    /// Receives one burst and hands each frame to `f` (its time: the driver's stamp, else
    /// `now_ns`); returns how many frames came.
    pub fn poll(&mut self, now_ns: i64, mut f: impl FnMut(Frame<'_>)) -> usize {
        if self.next >= self.count {
            self.receive();
        }
        let mut n = 0;
        while let Some(mbuf) = self.advance() {
            f(self.frame(mbuf, now_ns));
            n += 1;
        }
        n
    }

    /// Releases the current burst and receives the next one.
    fn receive(&mut self) -> usize {
        self.release();
        // SAFETY: mbufs has room for MAX_BURST ≥ burst pointers; the port is started.
        let n = unsafe { ffi::mdi_dpdk_rx_burst(self.port, self.mbufs.as_mut_ptr(), self.burst) };
        self.count = usize::from(n);
        if n > 0 {
            self.counters.bursts += 1;
        }
        self.count
    }

    fn release(&mut self) {
        if self.count > 0 {
            // SAFETY: mbufs[..count] are the buffers the last burst returned, each freed
            // once, here; the frames handed out from them borrowed `self` and are gone.
            unsafe { ffi::mdi_dpdk_free_bulk(self.mbufs.as_mut_ptr(), self.count as u32) };
        }
        self.count = 0;
        self.next = 0;
    }

    /// The next single-buffer frame of the current burst (others are counted, skipped).
    fn advance(&mut self) -> Option<*mut ffi::rte_mbuf> {
        while self.next < self.count {
            let mbuf = self.mbufs[self.next];
            self.next += 1;
            let mut segments = 0u16;
            // SAFETY: mbuf came from the last burst and is not freed until `release`.
            unsafe { ffi::mdi_dpdk_mbuf_pkt_len(mbuf, &mut segments) };
            if segments == 1 {
                self.counters.frames += 1;
                return Some(mbuf);
            }
            self.counters.segmented += 1;
        }
        None
    }

    /// The frame in `mbuf` (of the current burst), stamped by the driver or `now_ns`.
    fn frame(&self, mbuf: *mut ffi::rte_mbuf, now_ns: i64) -> Frame<'_> {
        let mut len = 0u32;
        // SAFETY: mbuf is of the current burst (not freed until `release`, which needs
        // `&mut self` and so outlives every frame borrowed from `&self`).
        let data = unsafe { ffi::mdi_dpdk_mbuf_data(mbuf, &mut len) };
        let mut stamp = 0u64;
        // SAFETY: as above; stamp is a valid place for the timestamp.
        let stamped = self.timestamp_unit_ns.is_some()
            && unsafe { ffi::mdi_dpdk_mbuf_timestamp(mbuf, &mut stamp) } != 0;
        let time_ns = match self.timestamp_unit_ns {
            Some(unit) if stamped => i64::try_from(stamp.saturating_mul(unit)).unwrap_or(now_ns),
            _ => now_ns,
        };
        Frame {
            time_ns,
            // SAFETY: data points at len readable bytes of the mbuf, alive as above.
            data: unsafe { std::slice::from_raw_parts(data, len as usize) },
            link: mdi_itch::pcap::LinkType::Ethernet,
        }
    }
}

/// Frames one at a time (replays). Without [`DpdkPort::end_when_idle`] it waits for the
/// next frame however long that takes: live receive uses [`DpdkPort::poll`] instead.
impl FrameSource for DpdkPort {
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, FrameError> {
        loop {
            if let Some(mbuf) = self.advance() {
                return Ok(Some(self.frame(mbuf, self.burst_ns)));
            }
            if self.receive() > 0 {
                // frames without a driver stamp get their burst's receive time
                self.burst_ns = mdi_transport::wall_clock_ns();
                self.idle_since = None;
                continue;
            }
            let Some(idle_end) = self.idle_end else {
                std::hint::spin_loop();
                continue;
            };
            let since = *self.idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= idle_end {
                return Ok(None);
            }
            std::thread::yield_now();
        }
    }
}

impl Drop for DpdkPort {
    fn drop(&mut self) {
        self.release();
        // SAFETY: the port was started by `open` and its buffers are all back in the
        // pool; the pool is freed after the port that used it is closed.
        unsafe {
            ffi::mdi_dpdk_port_stop(self.port);
            ffi::mdi_dpdk_pool_free(self.pool);
        }
    }
}

//! Why opening or reading streams failed.

use std::path::PathBuf;

use mdi_protocol::ring::{ReaderOpenError, RegisterError};

/// Opening or reading streams failed.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// No stream was named and the shm directory has none.
    #[error("no streams in {0}")]
    NoStreams(PathBuf),
    /// Listing the shm directory failed.
    #[error("listing streams in {path}: {source}")]
    List {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No stream (or not every stream named) arrived on the UDP channels in time.
    #[cfg(feature = "udp")]
    #[error("no stream arrived on the UDP channels within {} s (is a publisher serving them?)", waited.as_secs())]
    NothingOnUdp {
        /// How long the subscriber waited.
        waited: std::time::Duration,
    },
    /// The UDP receiver could not start (the channel's address in use, ...).
    #[cfg(feature = "udp")]
    #[error("UDP: {0}")]
    Udp(mdi_transport::receiver::UdpReceiveError),
    /// Registering the reader failed (readers file not writable, all slots taken).
    #[error("registering on stream {stream:?}: {source}")]
    Register {
        /// The stream.
        stream: String,
        /// Why.
        source: RegisterError,
    },
    /// A stream could not be opened (missing, foreign or corrupt file, sequence gone).
    #[error("stream {stream:?}: {source}")]
    Open {
        /// The stream.
        stream: String,
        /// Why.
        source: ReaderOpenError,
    },
    /// A record in shared memory is corrupt (not a torn write: those are never seen).
    #[error("stream {stream:?}: {detail}")]
    Corrupt {
        /// The stream.
        stream: String,
        /// What the ring found.
        detail: String,
    },
    /// The stream's archive could not be read.
    #[error("archive of stream {stream:?}: {source}")]
    Archive {
        /// The stream.
        stream: String,
        /// Why.
        source: mdi_archive::ArchiveReadError,
    },
}

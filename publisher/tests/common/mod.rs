//! Helpers shared by the publisher's integration tests.
#![allow(dead_code)]

pub mod servers;

use std::net::UdpSocket;

use mdi_protocol::ring::{ReadEvent, RingReader, ShmDir, StartAt};

/// A record as a replica must reproduce it: position, sequence, kind, body (epoch
/// starts as kind 1 with the epoch as body).
pub type Seen = (u64, u64, u16, Vec<u8>);

pub fn contents(shm: &ShmDir, name: &str) -> Vec<Seen> {
    let mut reader = RingReader::open(shm, name, StartAt::Earliest).unwrap();
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

pub fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

//! The reliable-UDP wire format: every frame round-trips; truncated, corrupted and
//! arbitrary datagrams are errors, never panics and never frames that lie.

use mdi_protocol::ring::{RecordHeader, align_record};
use mdi_protocol::udp::frame::{
    DATA_HEADER_LEN, FLAG_FRAGMENT, FLAG_SETUP_REQUEST, Frame, FrameError, FrameWriter,
    STREAM_NAME_LEN, SetupBody, StatusBody, UnavailableBody, decode_stream_name,
    encode_stream_name,
};
use proptest::prelude::*;
use zerocopy::IntoBytes;
use zerocopy::byteorder::little_endian::{U32, U64};

/// Raw ring records as a sender copies them: header + body, each padded to 8 bytes.
fn records(bodies: &[Vec<u8>], first_seq: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let header = RecordHeader {
            len: 16 + body.len() as u32,
            kind: 0x8000,
            flags: 0,
            seq: first_seq + i as u64,
        };
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(body);
        out.resize(out.len().next_multiple_of(8), 0);
    }
    out
}

fn setup_body() -> SetupBody {
    SetupBody {
        epoch: U64::new(3),
        ring_id: U64::new(1_700_000_000_000_000_000),
        capacity: U64::new(64 << 20),
        initial_position: U64::new(4096),
        initial_seq: U64::new(17),
        retained_from: U64::new(0),
        tail_position: U64::new(8192),
        mtu: U32::new(1408),
        reserved: U32::new(0),
        stream_name: encode_stream_name("ticks").unwrap(),
    }
}

/// One valid frame of every type.
fn every_frame() -> Vec<Vec<u8>> {
    let mut w = FrameWriter::new(1408, 7, 1);
    let payload = records(&[vec![1; 5], vec![2; 48], vec![]], 10);
    vec![
        w.setup(0, &setup_body()).to_vec(),
        w.data(4096, 4096 + payload.len() as u64, &payload).to_vec(),
        w.fragment(
            8192,
            8192 + 4096,
            4096,
            0,
            &records(&[vec![9; 4080]], 20)[..1000],
        )
        .to_vec(),
        w.heartbeat(9000).to_vec(),
        w.nak(0, 42, 4096, 512).to_vec(),
        w.status(
            FLAG_SETUP_REQUEST,
            &StatusBody {
                receiver_id: U64::new(42),
                position: U64::new(4096),
                high_water_mark: U64::new(9000),
                lost_records: U64::new(3),
            },
        )
        .to_vec(),
        w.unavailable(&UnavailableBody {
            from_position: U64::new(0),
            resume_position: U64::new(4096),
            resume_seq: U64::new(17),
            reserved: U64::new(0),
        })
        .to_vec(),
        w.end(9000, 99).to_vec(),
    ]
}

#[test]
fn every_frame_type_round_trips() {
    let frames = every_frame();
    for frame in &frames {
        assert_eq!(frame.len() % 8, 0);
        assert!(Frame::parse(frame).is_ok(), "{:?}", Frame::parse(frame));
    }
    match Frame::parse(&frames[0]).unwrap() {
        Frame::Setup(s) => {
            assert_eq!((s.session_id, s.stream_id), (7, 1));
            assert_eq!(s.body.initial_seq.get(), 17);
            assert_eq!(decode_stream_name(&s.body.stream_name), Some("ticks"));
        }
        other => panic!("{other:?}"),
    }
    match Frame::parse(&frames[1]).unwrap() {
        Frame::Data(d) => {
            assert!(!d.body.is_fragment(d.flags));
            assert_eq!(d.body.header.position.get(), 4096);
            let seqs: Vec<u64> = d.body.records().map(|(_, h)| h.seq).collect();
            assert_eq!(seqs, vec![10, 11, 12]);
            let lens: Vec<u32> = d.body.records().map(|(_, h)| h.len).collect();
            assert_eq!(lens, vec![21, 64, 16]);
        }
        other => panic!("{other:?}"),
    }
    match Frame::parse(&frames[2]).unwrap() {
        Frame::Data(d) => {
            assert!(d.body.is_fragment(d.flags));
            assert_eq!(d.body.header.record_len.get(), 4096);
            assert_eq!(d.body.payload.len(), 1000);
        }
        other => panic!("{other:?}"),
    }
    match Frame::parse(&frames[4]).unwrap() {
        Frame::Nak(n) => {
            assert_eq!(n.body.receiver_id.get(), 42);
            assert_eq!((n.body.position.get(), n.body.length.get()), (4096, 512));
        }
        other => panic!("{other:?}"),
    }
    match Frame::parse(&frames[5]).unwrap() {
        Frame::Status(s) => assert_eq!(s.flags, FLAG_SETUP_REQUEST),
        other => panic!("{other:?}"),
    }
    match Frame::parse(&frames[7]).unwrap() {
        Frame::End(e) => assert_eq!(
            (e.body.final_position.get(), e.body.final_seq.get()),
            (9000, 99)
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_truncation_is_an_error() {
    for frame in every_frame() {
        for len in 0..frame.len() {
            assert!(
                Frame::parse(&frame[..len]).is_err(),
                "prefix of {len} bytes parsed"
            );
        }
        // Extra bytes after a frame are refused too (one frame per datagram).
        let mut longer = frame.clone();
        longer.extend_from_slice(&[0; 8]);
        assert!(Frame::parse(&longer).is_err());
    }
}

#[test]
fn header_problems_are_named() {
    let frame = every_frame()[3].clone();
    let mut bad = frame.clone();
    bad[0] = 2;
    assert_eq!(
        Frame::parse(&bad).unwrap_err(),
        FrameError::UnsupportedVersion(2)
    );
    let mut bad = frame.clone();
    bad[1] = 99;
    assert_eq!(Frame::parse(&bad).unwrap_err(), FrameError::UnknownType(99));
    let mut bad = frame.clone();
    bad[4] = 200;
    assert!(matches!(
        Frame::parse(&bad),
        Err(FrameError::LengthMismatch { declared: 200, .. })
    ));
    assert!(
        Frame::parse(&[])
            .unwrap_err()
            .to_string()
            .contains("truncated")
    );
}

#[test]
fn malformed_data_payloads_are_refused() {
    let mut w = FrameWriter::new(1408, 1, 1);
    let payload = records(&[vec![1; 8], vec![2; 8]], 0);
    // A record length running past the payload.
    let mut long = payload.clone();
    long[0] = 200;
    assert!(matches!(
        Frame::parse(w.data(0, 1000, &long)),
        Err(FrameError::BadPayload(_))
    ));
    // Padding (kind 0) is never sent.
    let mut padding = payload.clone();
    padding[4] = 0;
    padding[5] = 0;
    assert!(Frame::parse(w.data(0, 1000, &padding)).is_err());
    // next_position inside the payload.
    assert!(Frame::parse(w.data(0, 8, &payload)).is_err());
    // Unaligned positions.
    assert!(Frame::parse(w.data(4, 1000, &payload)).is_err());
    // Fragments: outside the record, wrong first header, flag missing.
    let big = records(&[vec![5; 2000]], 0);
    let record_len = big.len() as u32;
    assert!(Frame::parse(w.fragment(0, 4096, record_len, 0, &big[..896])).is_ok());
    assert!(Frame::parse(w.fragment(0, 4096, record_len, 1504, &big[1504..])).is_ok());
    assert!(Frame::parse(w.fragment(0, 4096, record_len, 1600, &big[1504..])).is_err());
    assert!(Frame::parse(w.fragment(0, 4096, record_len, 1500, &big[1504..1512])).is_err());
    assert!(Frame::parse(w.fragment(0, 4096, record_len + 8, 0, &big[..896])).is_err());
    assert!(Frame::parse(w.fragment(0, 100, record_len, 0, &big[..896])).is_err());
    let mut unflagged = w.fragment(0, 4096, record_len, 8, &big[8..896]).to_vec();
    unflagged[2] &= !(FLAG_FRAGMENT as u8);
    assert!(Frame::parse(&unflagged).is_err());
}

#[test]
fn stream_names_fit_or_are_refused() {
    assert!(encode_stream_name(&"x".repeat(STREAM_NAME_LEN)).is_none());
    let name = encode_stream_name(&"y".repeat(STREAM_NAME_LEN - 1)).unwrap();
    assert_eq!(
        decode_stream_name(&name).unwrap().len(),
        STREAM_NAME_LEN - 1
    );
}

proptest! {
    #[test]
    fn arbitrary_datagrams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Frame::parse(&bytes);
    }

    /// Any single corrupted byte yields an error or a frame that is still self-consistent.
    #[test]
    fn corrupted_frames_are_errors_or_consistent(which in 0usize..8, at in any::<prop::sample::Index>(), value: u8) {
        let mut frame = every_frame()[which].clone();
        let i = at.index(frame.len());
        frame[i] = value;
        if let Ok(Frame::Data(d)) = Frame::parse(&frame)
            && !d.body.is_fragment(d.flags) {
                let total: u64 = d.body.records().map(|(_, h)| align_record(u64::from(h.len))).sum();
                prop_assert_eq!(total, d.body.payload.len() as u64);
            }
    }

    #[test]
    fn data_frames_round_trip(bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..8), position in 0u64..1 << 40, first_seq: u32) {
        let position = position * 8;
        let payload = records(&bodies, u64::from(first_seq));
        prop_assume!(DATA_HEADER_LEN + payload.len() <= 8960);
        let mut w = FrameWriter::new(8960, 1, 2);
        let frame = w.data(position, position + payload.len() as u64, &payload).to_vec();
        match Frame::parse(&frame) {
            Ok(Frame::Data(d)) => {
                prop_assert_eq!(d.body.payload, &payload[..]);
                let seqs: Vec<u64> = d.body.records().map(|(_, h)| h.seq).collect();
                let expected: Vec<u64> = (0..bodies.len() as u64).map(|i| u64::from(first_seq) + i).collect();
                prop_assert_eq!(seqs, expected);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }
}

//! CometBFT's privval framing: each message is a protobuf `privval.Message` preceded by its
//! length as an unsigned varint. This file owns reading and writing frames, and refusing the bad
//! ones: a length prefix longer than 10 bytes or above [`MAX_FRAME`], a body that is not a
//! `Message`, a `Message` with nothing in it.
//!
//! It never trusts a length before checking it (no allocation is sized by the peer beyond
//! [`MAX_FRAME`]) and never panics on input; [`decode`] is the fuzzing entry point.

use std::io::{Read, Write};

use prost::Message as _;
use tendermint_proto::v0_38::privval::Message;

/// CometBFT refuses remote signer messages above 10 KiB; so does failoverd.
pub const MAX_FRAME: usize = 10 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is above the 10 KiB privval limit")]
    TooLarge { len: u64 },
    #[error("frame length prefix is not a varint of at most 10 bytes")]
    BadLength,
    #[error("frame body is not a privval Message: {0}")]
    Malformed(String),
    #[error("privval Message carries no request")]
    Empty,
    /// The read timed out before any byte of a new frame arrived: the peer is silent, which
    /// between requests is normal. Not a bad frame.
    #[error("nothing arrived before the read timeout")]
    Idle,
    /// The read timed out part-way through a frame.
    #[error("a frame stopped arriving after {received} bytes and the read timed out")]
    Stalled { received: usize },
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
}

/// Whether `e` is a read timeout: a socket with `SO_RCVTIMEO` reports one as `WouldBlock`
/// (EAGAIN, "os error 11") on Linux, or `TimedOut`.
fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
}

/// `read_exact`, telling a read timeout apart: [`FrameError::Idle`] when nothing of the frame had
/// arrived (`received` 0), [`FrameError::Stalled`] when part of it had.
fn read_part(r: &mut impl Read, buf: &mut [u8], received: usize) -> Result<(), FrameError> {
    r.read_exact(buf).map_err(|e| match (is_timeout(&e), received) {
        (true, 0) => FrameError::Idle,
        (true, received) => FrameError::Stalled { received },
        (false, _) => FrameError::Io(e),
    })
}

/// One frame decoded from the start of `buf`: the message and how many bytes it took, or `None`
/// while `buf` holds only part of a frame.
pub fn decode(buf: &[u8]) -> Result<Option<(Message, usize)>, FrameError> {
    let mut len: u64 = 0;
    let mut prefix = 0;
    loop {
        let Some(byte) = buf.get(prefix) else { return Ok(None) };
        if prefix == 10 {
            return Err(FrameError::BadLength);
        }
        len |= u64::from(byte & 0x7f) << (7 * prefix);
        prefix += 1;
        if byte & 0x80 == 0 {
            break;
        }
    }
    if len > MAX_FRAME as u64 {
        return Err(FrameError::TooLarge { len });
    }
    // len ≤ MAX_FRAME, so it fits a usize.
    let end = prefix + len as usize;
    let Some(body) = buf.get(prefix..end) else { return Ok(None) };
    let message = Message::decode(body).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if message.sum.is_none() {
        return Err(FrameError::Empty);
    }
    Ok(Some((message, end)))
}

/// `msg` as a frame.
pub fn encode(msg: &Message) -> Vec<u8> {
    msg.encode_length_delimited_to_vec()
}

/// Reads one frame. Reads byte by byte through the length prefix, then exactly the body, so
/// nothing of the next frame is consumed.
pub fn read_message(r: &mut impl Read) -> Result<Message, FrameError> {
    let mut head = Vec::with_capacity(10);
    loop {
        let mut byte = [0u8; 1];
        read_part(r, &mut byte, head.len())?;
        head.push(byte[0]);
        if byte[0] & 0x80 == 0 {
            break;
        }
        if head.len() == 10 {
            return Err(FrameError::BadLength);
        }
    }
    let mut len: u64 = 0;
    for (i, b) in head.iter().enumerate() {
        len |= u64::from(b & 0x7f) << (7 * i);
    }
    if len > MAX_FRAME as u64 {
        return Err(FrameError::TooLarge { len });
    }
    let mut frame = head;
    let start = frame.len();
    frame.resize(start + len as usize, 0);
    read_part(r, &mut frame[start..], start)?;
    match decode(&frame)? {
        Some((message, _)) => Ok(message),
        None => Err(FrameError::Malformed("frame shorter than its length prefix".into())),
    }
}

pub fn write_message(w: &mut impl Write, msg: &Message) -> Result<(), FrameError> {
    w.write_all(&encode(msg))?;
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tendermint_proto::v0_38::privval::{PingRequest, PubKeyRequest, message::Sum};

    fn ping() -> Message {
        Message { sum: Some(Sum::PingRequest(PingRequest {})) }
    }

    #[test]
    fn a_frame_round_trips_and_reports_its_length() {
        let msg = Message { sum: Some(Sum::PubKeyRequest(PubKeyRequest { chain_id: "test-chain".into() })) };
        let mut bytes = encode(&msg);
        let n = bytes.len();
        bytes.extend(encode(&ping()));
        let (got, used) = decode(&bytes).expect("valid").expect("complete");
        assert_eq!((got, used), (msg, n));
        let (second, _) = decode(&bytes[n..]).expect("valid").expect("complete");
        assert_eq!(second, ping());
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let bytes = encode(&Message { sum: Some(Sum::PubKeyRequest(PubKeyRequest { chain_id: "c".repeat(200) })) });
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).expect("no error on a prefix").is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn bad_frames_are_named() {
        // 10 KiB + 1 announced.
        let mut big = Vec::new();
        prost::encoding::encode_varint((MAX_FRAME + 1) as u64, &mut big);
        assert!(matches!(decode(&big), Err(FrameError::TooLarge { len }) if len == MAX_FRAME as u64 + 1));
        assert!(matches!(decode(&[0xff; 11]), Err(FrameError::BadLength)));
        assert!(matches!(decode(&[0x00]), Err(FrameError::Empty)));
        assert!(matches!(decode(&[0x02, 0xff, 0xff]), Err(FrameError::Malformed(_))));
    }

    #[test]
    fn read_message_refuses_an_oversize_frame_without_reading_it() {
        let mut stream = Vec::new();
        prost::encoding::encode_varint(1 << 20, &mut stream);
        let mut r = std::io::Cursor::new(stream);
        assert!(matches!(read_message(&mut r), Err(FrameError::TooLarge { .. })));
        let mut r = std::io::Cursor::new(encode(&ping()));
        assert_eq!(read_message(&mut r).expect("ping"), ping());
    }

    /// A reader that hands out `data`, then fails every read as a timed-out socket does.
    struct TimesOut(std::io::Cursor<Vec<u8>>);

    impl Read for TimesOut {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            match self.0.read(out)? {
                0 => Err(std::io::Error::from_raw_os_error(11)),
                n => Ok(n),
            }
        }
    }

    #[test]
    fn a_read_timeout_is_idle_between_frames_and_stalled_inside_one_never_a_bad_frame() {
        let idle = read_message(&mut TimesOut(std::io::Cursor::new(Vec::new())));
        assert!(matches!(idle, Err(FrameError::Idle)), "{idle:?}");
        let whole = encode(&ping());
        let cut = read_message(&mut TimesOut(std::io::Cursor::new(whole[..1].to_vec())));
        assert!(matches!(cut, Err(FrameError::Stalled { received: 1 })), "{cut:?}");
        let mut two = whole.clone();
        two.extend(&whole);
        let mut r = TimesOut(std::io::Cursor::new(two));
        assert_eq!(read_message(&mut r).expect("first"), ping());
        assert_eq!(read_message(&mut r).expect("second"), ping());
        assert!(matches!(read_message(&mut r), Err(FrameError::Idle)));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
            let _ = read_message(&mut std::io::Cursor::new(bytes));
        }
    }
}

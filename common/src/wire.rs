//! Framing of one message on a stream: `[u32 LE header length][postcard
//! header][raw payload]`. The pure encode/decode functions are what the fuzz
//! and property tests exercise; the async helpers move frames over quinn.

use crate::proto::MAX_HEADER_LEN;
use bytes::{Bytes, BytesMut};
use serde::{de::DeserializeOwned, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("header of {0} bytes exceeds the {MAX_HEADER_LEN}-byte limit")]
    HeaderTooLarge(usize),
    #[error("malformed header: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("stream ended early: {0}")]
    Truncated(String),
    #[error("payload of {got} bytes where {want} were declared")]
    PayloadLength { want: u64, got: u64 },
    #[error("stream error: {0}")]
    Stream(String),
}

/// Encodes a header with its length prefix.
pub fn encode_header<T: Serialize>(header: &T) -> Result<Bytes, WireError> {
    let encoded = postcard::to_stdvec(header)?;
    if encoded.len() > MAX_HEADER_LEN {
        return Err(WireError::HeaderTooLarge(encoded.len()));
    }
    let mut out = BytesMut::with_capacity(4 + encoded.len());
    out.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
    out.extend_from_slice(&encoded);
    Ok(out.freeze())
}

/// Reads the 4-byte length prefix, refusing lengths over the limit.
pub fn decode_header_len(prefix: [u8; 4]) -> Result<usize, WireError> {
    let len = u32::from_le_bytes(prefix) as usize;
    if len > MAX_HEADER_LEN {
        return Err(WireError::HeaderTooLarge(len));
    }
    Ok(len)
}

/// Decodes a header body; trailing bytes are an error, so a frame means
/// exactly one thing.
pub fn decode_header<T: DeserializeOwned>(body: &[u8]) -> Result<T, WireError> {
    let (value, rest) = postcard::take_from_bytes(body)?;
    if !rest.is_empty() {
        return Err(WireError::Truncated(format!(
            "{} stray bytes after the header",
            rest.len()
        )));
    }
    Ok(value)
}

/// Decodes a whole frame held in memory: header, then the payload.
pub fn decode_frame<T: DeserializeOwned>(frame: &[u8]) -> Result<(T, &[u8]), WireError> {
    if frame.len() < 4 {
        return Err(WireError::Truncated("no length prefix".into()));
    }
    let len = decode_header_len(frame[..4].try_into().expect("4 bytes"))?;
    let body = frame
        .get(4..4 + len)
        .ok_or_else(|| WireError::Truncated(format!("header declares {len} bytes")))?;
    Ok((decode_header(body)?, &frame[4 + len..]))
}

/// Sends a header and its payload chunks, then finishes the stream.
pub async fn send_message<T: Serialize>(
    send: &mut quinn::SendStream,
    header: &T,
    payload: &mut [Bytes],
) -> Result<(), WireError> {
    let head = encode_header(header)?;
    let mut chunks: Vec<Bytes> = Vec::with_capacity(1 + payload.len());
    chunks.push(head);
    chunks.extend(payload.iter_mut().map(std::mem::take));
    send.write_all_chunks(&mut chunks)
        .await
        .map_err(|e| WireError::Stream(e.to_string()))?;
    send.finish().map_err(|e| WireError::Stream(e.to_string()))?;
    Ok(())
}

/// Receives a header.
pub async fn recv_header<T: DeserializeOwned>(recv: &mut quinn::RecvStream) -> Result<T, WireError> {
    let mut prefix = [0u8; 4];
    recv.read_exact(&mut prefix)
        .await
        .map_err(|e| WireError::Truncated(e.to_string()))?;
    let len = decode_header_len(prefix)?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| WireError::Truncated(e.to_string()))?;
    decode_header(&body)
}

/// Receives exactly `len` payload bytes and checks that nothing follows: a
/// sender cancelled mid-upload finishes its stream short, and a short write
/// must never be applied.
pub async fn recv_payload(recv: &mut quinn::RecvStream, len: u64) -> Result<Bytes, WireError> {
    let mut buf = BytesMut::with_capacity(len as usize);
    while (buf.len() as u64) < len {
        let want = (len - buf.len() as u64) as usize;
        match recv
            .read_chunk(want, true)
            .await
            .map_err(|e| WireError::Stream(e.to_string()))?
        {
            Some(chunk) => buf.extend_from_slice(&chunk.bytes),
            None => {
                return Err(WireError::PayloadLength {
                    want: len,
                    got: buf.len() as u64,
                })
            }
        }
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::*;
    use crate::Gfid;
    use proptest::prelude::*;

    #[test]
    fn frame_round_trip() {
        let req = Request::Fop {
            brick: uuid::Uuid::new_v4(),
            op: Fop::Write {
                fh: 7,
                offset: 1 << 40,
                len: 3,
            },
        };
        let mut frame = encode_header(&req).unwrap().to_vec();
        frame.extend_from_slice(b"abc");
        let (back, payload): (Request, _) = decode_frame(&frame).unwrap();
        assert_eq!(back, req);
        assert_eq!(payload, b"abc");
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let frame = [0xff, 0xff, 0xff, 0x7f, 1, 2, 3];
        assert!(matches!(
            decode_frame::<Request>(&frame),
            Err(WireError::HeaderTooLarge(_))
        ));
    }

    #[test]
    fn truncated_header_is_an_error() {
        let req = Request::Fop {
            brick: uuid::Uuid::nil(),
            op: Fop::Lookup {
                parent: Gfid::ROOT,
                name: b"hello".to_vec(),
            },
        };
        let frame = encode_header(&req).unwrap();
        for cut in 0..frame.len() {
            assert!(decode_frame::<Request>(&frame[..cut]).is_err(), "cut at {cut}");
        }
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_frame::<Request>(&bytes);
            let _ = decode_frame::<Response>(&bytes);
        }

        #[test]
        fn names_round_trip(name in proptest::collection::vec(any::<u8>(), 0..300), cookie in any::<u64>()) {
            let resp = Response::Ok(Reply::Dir { entries: vec![DirEntry {
                cookie, name: name.clone(), gfid: Gfid::random(), kind: libc::S_IFREG, attr: None, linkto: Some(uuid::Uuid::new_v4()) }], eof: true });
            let frame = encode_header(&resp).unwrap();
            let (back, rest): (Response, _) = decode_frame(&frame).unwrap();
            prop_assert_eq!(back, resp);
            prop_assert!(rest.is_empty());
        }
    }
}

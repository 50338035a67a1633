//! gzip and deflate for both front ends: bounded decompression of requests, compression of answers.
//!
//! A compressed request is a promise about its size that the client does not have to keep: a few hundred
//! kilobytes of deflate can inflate to gigabytes. [`inflate`] therefore never trusts a size the data
//! claims; it grows its output step by step and stops at one byte past the limit it is given (the gRPC
//! message limit, or the REST body limit, which are the same `--grpc-max-message-bytes`), so a bomb costs
//! the server at most the limit, never the size it would inflate to.
//!
//! - [`grpc`]: a tower layer that inflates compressed gRPC messages and compresses inference answers, on
//!   the blocking pool, so that neither holds a runtime worker.
//! - The REST front end calls [`inflate`] and [`compress`] on whole bodies (`crate::http::encoding`).

pub mod grpc;

use std::io::{Read, Write};

use flate2::{
    Compression,
    bufread::{GzDecoder, ZlibDecoder},
    write::{GzEncoder, ZlibEncoder},
};

/// The content codings Ferry reads and writes, on both protocols. `deflate` is the zlib format
/// (RFC 1950), as HTTP and gRPC define it and as tritonclient and gRPC's libraries send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// RFC 1952 gzip.
    Gzip,
    /// RFC 1950 zlib (HTTP's and gRPC's `deflate`).
    Deflate,
}

impl Encoding {
    /// The coding's name in `Content-Encoding`, `Accept-Encoding`, `grpc-encoding` and
    /// `grpc-accept-encoding`.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
        }
    }

    /// The coding a header names, ignoring case and surrounding spaces; `None` for any other name.
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.trim();
        if name.eq_ignore_ascii_case("gzip") {
            Some(Encoding::Gzip)
        } else if name.eq_ignore_ascii_case("deflate") {
            Some(Encoding::Deflate)
        } else {
            None
        }
    }

    /// The coding `data` is in, from its first bytes: gzip's magic number, else zlib. Triton's REST front
    /// end inflates the same way (zlib's automatic header detection), whichever of the two the header names.
    fn detect(data: &[u8]) -> Self {
        if data.starts_with(&[0x1f, 0x8b]) {
            Encoding::Gzip
        } else {
            Encoding::Deflate
        }
    }
}

/// Why compressed data could not be inflated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// The data inflates past the limit; inflating stopped there.
    #[error("it inflates to more than {limit} bytes")]
    TooLarge {
        /// The limit it passed.
        limit: usize,
    },
    /// The data is not a whole, valid stream of the coding.
    #[error("it is not valid {encoding} data ({detail})")]
    Corrupt {
        /// The coding the data claimed to be in, by its first bytes.
        encoding: &'static str,
        /// What the decoder found wrong.
        detail: String,
    },
}

/// The smallest step by which inflated output grows, so that small messages take one allocation.
const MIN_GROWTH: usize = 16 * 1024;

/// Inflates `compressed` (gzip or zlib, told apart by its first bytes) and appends the result to `out`,
/// refusing it as soon as it passes `limit` bytes. `out` grows by doubling, capped at `limit` + 1 bytes
/// more than it held, so the memory a bomb takes is bounded by the limit, whatever it claims or would
/// inflate to. Empty or truncated input, and bytes after the end of the stream, are [`InflateError::Corrupt`].
pub fn inflate_into(compressed: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), InflateError> {
    let encoding = Encoding::detect(compressed);
    let (outcome, left) = match encoding {
        Encoding::Gzip => {
            let mut decoder = GzDecoder::new(compressed);
            (read_bounded(&mut decoder, limit, out)?, decoder.get_ref().len())
        }
        Encoding::Deflate => {
            let mut decoder = ZlibDecoder::new(compressed);
            (read_bounded(&mut decoder, limit, out)?, decoder.get_ref().len())
        }
    };
    outcome.map_err(|detail| InflateError::Corrupt {
        encoding: encoding.name(),
        detail,
    })?;
    if left > 0 {
        return Err(InflateError::Corrupt {
            encoding: encoding.name(),
            detail: format!(
                "{left} bytes follow the end of the stream, of {} in all",
                compressed.len()
            ),
        });
    }
    Ok(())
}

/// Reads `reader` to its end onto `out`, growing `out` step by step and stopping one byte past `limit`.
/// The outer error is the limit; the inner one what the decoder found wrong.
fn read_bounded(
    reader: &mut impl Read,
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<Result<(), String>, InflateError> {
    let start = out.len();
    let most = limit.saturating_add(1);
    let mut filled = start;
    loop {
        if filled == out.len() {
            let held = filled - start;
            if held >= most {
                out.truncate(filled);
                return Err(InflateError::TooLarge { limit });
            }
            let grown = held.saturating_mul(2).max(MIN_GROWTH).min(most);
            out.reserve_exact(grown - held);
            out.resize(start + grown, 0);
        }
        match reader.read(&mut out[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => {
                out.truncate(filled);
                return Ok(Err(error.to_string()));
            }
        }
    }
    out.truncate(filled);
    Ok(Ok(()))
}

/// [`inflate_into`] a new buffer.
pub fn inflate(compressed: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    let mut out = Vec::new();
    inflate_into(compressed, limit, &mut out)?;
    Ok(out)
}

/// Compresses `data` with `encoding` at zlib's default level, the level Triton and gRPC's libraries use.
pub fn compress(encoding: Encoding, data: &[u8]) -> Vec<u8> {
    compress_chunks(encoding, &[data])
}

/// Compresses the concatenation of `chunks`, without concatenating them first.
pub fn compress_chunks(encoding: Encoding, chunks: &[impl AsRef<[u8]>]) -> Vec<u8> {
    let size: usize = chunks.iter().map(|chunk| chunk.as_ref().len()).sum();
    compress_onto(Vec::with_capacity(size / 2 + 64), encoding, chunks)
}

/// Compresses the concatenation of `chunks` onto the end of `out` (after a frame prefix, say).
pub fn compress_onto(out: Vec<u8>, encoding: Encoding, chunks: &[impl AsRef<[u8]>]) -> Vec<u8> {
    // Writing into a vector cannot fail, so neither can the encoders.
    match encoding {
        Encoding::Gzip => {
            let mut encoder = GzEncoder::new(out, Compression::default());
            for chunk in chunks {
                let _ = encoder.write_all(chunk.as_ref());
            }
            encoder.finish().unwrap_or_default()
        }
        Encoding::Deflate => {
            let mut encoder = ZlibEncoder::new(out, Compression::default());
            for chunk in chunks {
                let _ = encoder.write_all(chunk.as_ref());
            }
            encoder.finish().unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_both_codings() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        for encoding in [Encoding::Gzip, Encoding::Deflate] {
            let packed = compress(encoding, &data);
            assert!(packed.len() < data.len() / 4, "{encoding:?} compresses");
            assert_eq!(inflate(&packed, data.len()).expect("inflates"), data);
            assert_eq!(
                inflate(&packed, data.len() - 1),
                Err(InflateError::TooLarge {
                    limit: data.len() - 1
                })
            );
        }
        assert_eq!(inflate(&compress(Encoding::Gzip, b""), 0), Ok(Vec::new()));
        let chunks = [&data[..10], &data[10..5000], &data[5000..]];
        assert_eq!(
            inflate(&compress_chunks(Encoding::Gzip, &chunks), data.len()),
            Ok(data)
        );
    }

    /// 4 MiB of zeros deflate to a few kilobytes; inflating them under a 100 KB limit must stop there,
    /// holding no more than the limit.
    #[test]
    fn a_bomb_stops_at_the_limit_with_bounded_memory() {
        let bomb = compress(Encoding::Deflate, &vec![0u8; 4 << 20]);
        let mut out = Vec::new();
        let error = inflate_into(&bomb, 100_000, &mut out).expect_err("bomb");
        assert_eq!(error, InflateError::TooLarge { limit: 100_000 });
        assert!(out.capacity() <= 100_001, "{} bytes held", out.capacity());
    }

    #[test]
    fn corrupt_truncated_and_trailing_data_are_refused() {
        let packed = compress(Encoding::Gzip, b"{\"inputs\": []}");
        let zlib = compress(Encoding::Deflate, b"{\"inputs\": []}");
        for (case, data) in [
            ("empty", Vec::new()),
            ("not compressed", b"{\"inputs\": []}".to_vec()),
            ("gzip cut short", packed[..packed.len() - 3].to_vec()),
            ("zlib cut short", zlib[..zlib.len() - 3].to_vec()),
            ("zlib with garbage after", [&zlib[..], b"garbage"].concat()),
            (
                "bad gzip header",
                [&[0x1f, 0x8b, 0xff][..], &packed[3..]].concat(),
            ),
        ] {
            let error = inflate(&data, 1 << 20).expect_err(case);
            assert!(matches!(error, InflateError::Corrupt { .. }), "{case}: {error:?}");
        }
    }

    #[test]
    fn names_are_read_as_headers_write_them() {
        assert_eq!(Encoding::from_name(" GZip "), Some(Encoding::Gzip));
        assert_eq!(Encoding::from_name("deflate"), Some(Encoding::Deflate));
        assert_eq!(Encoding::from_name("br"), None);
        assert_eq!(Encoding::from_name("identity"), None);
    }
}

//! The mapping between Rust element types and Triton datatypes, and the little-endian wire layout of each.
//!
//! Keeping the datatype name, element size and both encodings on one trait lets inputs and outputs be
//! generic over the element type while a mismatch (reading `INT64` as `f32`) is caught by comparing one
//! string, not by reinterpreting bytes.

use bytes::{Buf, Bytes};
use half::{bf16, f16};

use crate::ClientError;
use crate::proto::InferTensorContents;

/// The protocol name of variable-length byte-string tensors, which have no fixed-size Rust element type.
pub(crate) const BYTES: &str = "BYTES";

mod sealed {
    /// Closes [`super::TensorElement`]: the set of Triton datatypes is fixed by the protocol, so an outside
    /// implementation could only ever be wrong.
    pub trait Sealed {}
}

/// A fixed-size element type that has a Triton datatype: `f32`, `f64`, `i8`..`i64`, `u8`..`u64`, `bool`,
/// [`half::f16`] and [`half::bf16`].
///
/// `BYTES` tensors are not covered because their elements vary in length; use
/// [`InferInput::with_bytes`](crate::InferInput::with_bytes) and
/// [`InferResult::output_bytes`](crate::InferResult::output_bytes) for them.
pub trait TensorElement: Copy + Send + Sync + 'static + sealed::Sealed {
    /// The datatype string the protocol uses for this type (`"FP32"`, `"INT64"`, ...), sent with inputs and
    /// checked against outputs.
    const DATATYPE: &'static str;

    /// Bytes per element in raw contents, needed to check a raw buffer against a shape before decoding.
    const SIZE: usize;

    /// Appends `values` to `out` in the raw (little-endian, unpadded) layout that `raw_input_contents`
    /// requires, whatever the host's byte order.
    fn encode_le(values: &[Self], out: &mut Vec<u8>);

    /// Reads raw little-endian contents; a trailing partial element is ignored, so callers check the length
    /// against [`Self::SIZE`] first to report it.
    fn decode_le(bytes: &[u8]) -> Vec<Self>;

    /// Reads the typed `contents` field that servers may use instead of raw contents, rejecting values that
    /// do not fit this type (an `INT8` output travels in the 32-bit `int_contents`).
    fn from_contents(contents: &InferTensorContents) -> Result<Vec<Self>, String>;
}

/// Converts typed contents into the narrower Rust type, naming the field and datatype on overflow.
fn narrow<S, T>(values: &[S], field: &str, datatype: &str) -> Result<Vec<T>, String>
where
    S: Copy + std::fmt::Display,
    T: TryFrom<S>,
{
    values
        .iter()
        .map(|&value| {
            T::try_from(value).map_err(|_| format!("value {value} in {field} does not fit {datatype}"))
        })
        .collect()
}

macro_rules! numeric_element {
    ($t:ty, $datatype:literal, $field:ident) => {
        numeric_element!(@impl $t, $datatype, |contents: &InferTensorContents| {
            narrow(&contents.$field, stringify!($field), $datatype)
        });
    };
    ($t:ty, $datatype:literal) => {
        numeric_element!(@impl $t, $datatype, |_: &InferTensorContents| {
            Err(format!("{} has no typed contents field; it must be sent raw", $datatype))
        });
    };
    (@impl $t:ty, $datatype:literal, $from_contents:expr) => {
        impl sealed::Sealed for $t {}

        impl TensorElement for $t {
            const DATATYPE: &'static str = $datatype;
            const SIZE: usize = size_of::<$t>();

            fn encode_le(values: &[Self], out: &mut Vec<u8>) {
                out.reserve(values.len() * Self::SIZE);
                for value in values {
                    out.extend_from_slice(&value.to_le_bytes());
                }
            }

            fn decode_le(bytes: &[u8]) -> Vec<Self> {
                let (chunks, _) = bytes.as_chunks::<{ size_of::<$t>() }>();
                chunks.iter().map(|chunk| <$t>::from_le_bytes(*chunk)).collect()
            }

            fn from_contents(contents: &InferTensorContents) -> Result<Vec<Self>, String> {
                ($from_contents)(contents)
            }
        }
    };
}

numeric_element!(i8, "INT8", int_contents);
numeric_element!(i16, "INT16", int_contents);
numeric_element!(i32, "INT32", int_contents);
numeric_element!(i64, "INT64", int64_contents);
numeric_element!(u8, "UINT8", uint_contents);
numeric_element!(u16, "UINT16", uint_contents);
numeric_element!(u32, "UINT32", uint_contents);
numeric_element!(u64, "UINT64", uint64_contents);
numeric_element!(f32, "FP32", fp32_contents);
numeric_element!(f64, "FP64", fp64_contents);
numeric_element!(f16, "FP16");
numeric_element!(bf16, "BF16");

impl sealed::Sealed for bool {}

/// Raw `BOOL` is one byte per element; any non-zero byte reads as `true`, as in Triton.
impl TensorElement for bool {
    const DATATYPE: &'static str = "BOOL";
    const SIZE: usize = 1;

    fn encode_le(values: &[Self], out: &mut Vec<u8>) {
        out.extend(values.iter().map(|&value| u8::from(value)));
    }

    fn decode_le(bytes: &[u8]) -> Vec<Self> {
        bytes.iter().map(|&byte| byte != 0).collect()
    }

    fn from_contents(contents: &InferTensorContents) -> Result<Vec<Self>, String> {
        Ok(contents.bool_contents.clone())
    }
}

/// The number of elements a shape holds, rejecting negative (wildcard) dimensions, which only model
/// metadata may contain, and products that overflow.
pub(crate) fn element_count(tensor: &str, shape: &[i64]) -> Result<usize, ClientError> {
    shape.iter().try_fold(1usize, |count, &dim| {
        let dim = usize::try_from(dim)
            .map_err(|_| ClientError::malformed(tensor, format!("shape {shape:?} has dimension {dim}")))?;
        count.checked_mul(dim).ok_or_else(|| {
            ClientError::malformed(tensor, format!("shape {shape:?} overflows the element count"))
        })
    })
}

/// Appends `items` in the raw `BYTES` layout: each element is a 4-byte little-endian length, then its bytes.
pub(crate) fn encode_bytes<B: AsRef<[u8]>>(
    tensor: &str,
    items: impl IntoIterator<Item = B>,
    out: &mut Vec<u8>,
) -> Result<usize, ClientError> {
    let mut count = 0;
    for item in items {
        let item = item.as_ref();
        let len = u32::try_from(item.len()).map_err(|_| {
            ClientError::malformed(
                tensor,
                format!("element {count} is {} bytes, over the 4 GiB limit", item.len()),
            )
        })?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(item);
        count += 1;
    }
    Ok(count)
}

/// Splits raw `BYTES` contents into its elements without copying them.
pub(crate) fn decode_bytes(tensor: &str, raw: &Bytes) -> Result<Vec<Bytes>, ClientError> {
    let mut rest = raw.clone();
    let mut items = Vec::new();
    while rest.has_remaining() {
        if rest.remaining() < 4 {
            return Err(ClientError::malformed(
                tensor,
                format!(
                    "element {} has a truncated length prefix ({} of 4 bytes)",
                    items.len(),
                    rest.remaining()
                ),
            ));
        }
        let len = rest.get_u32_le() as usize;
        if rest.remaining() < len {
            return Err(ClientError::malformed(
                tensor,
                format!(
                    "element {} declares {len} bytes but only {} remain",
                    items.len(),
                    rest.remaining()
                ),
            ));
        }
        items.push(rest.split_to(len));
    }
    Ok(items)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_little_endian_whatever_the_host() {
        let mut out = Vec::new();
        i32::encode_le(&[1, -2], &mut out);
        assert_eq!(out, [1, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff]);

        let mut out = Vec::new();
        f16::encode_le(&[f16::ONE], &mut out);
        assert_eq!(out, [0x00, 0x3c]);

        let mut out = Vec::new();
        bf16::encode_le(&[bf16::ONE], &mut out);
        assert_eq!(out, [0x80, 0x3f]);
    }

    #[test]
    fn bool_uses_one_byte_and_reads_any_non_zero_as_true() {
        let mut out = Vec::new();
        bool::encode_le(&[true, false], &mut out);
        assert_eq!(out, [1, 0]);
        assert_eq!(bool::decode_le(&[0, 1, 7]), [false, true, true]);
    }

    #[test]
    fn bytes_elements_carry_four_byte_little_endian_lengths() {
        let mut out = Vec::new();
        let count = encode_bytes("t", ["ab", "", "xyz"], &mut out).unwrap();
        assert_eq!(count, 3);
        assert_eq!(out, b"\x02\0\0\0ab\0\0\0\0\x03\0\0\0xyz");
        let decoded = decode_bytes("t", &Bytes::from(out)).unwrap();
        assert_eq!(decoded, [&b"ab"[..], b"", b"xyz"]);
    }

    #[test]
    fn truncated_bytes_are_reported() {
        let err = decode_bytes("t", &Bytes::from_static(b"\x05\0\0\0abc")).unwrap_err();
        assert!(
            err.to_string().contains("declares 5 bytes but only 3 remain"),
            "{err}"
        );
        let err = decode_bytes("t", &Bytes::from_static(b"\x01\0\0\0a\x02\0")).unwrap_err();
        assert!(
            err.to_string()
                .contains("element 1 has a truncated length prefix"),
            "{err}"
        );
    }

    #[test]
    fn typed_contents_are_range_checked() {
        let contents = InferTensorContents {
            int_contents: vec![1, 300],
            ..Default::default()
        };
        assert_eq!(i16::from_contents(&contents).unwrap(), [1, 300]);
        let err = i8::from_contents(&contents).unwrap_err();
        assert_eq!(err, "value 300 in int_contents does not fit INT8");
        assert!(
            f16::from_contents(&contents)
                .unwrap_err()
                .contains("must be sent raw")
        );
    }
}

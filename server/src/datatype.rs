//! The tensor element types Ferry serves, and their names on every side: the KServe wire string (`FP32`),
//! the `config.pbtxt` enum (`TYPE_FP32`) and ONNX Runtime's element type.

use std::fmt;

use ferry_proto::inference::DataType as ConfigType;
use ort::value::TensorElementType as OrtType;

/// A tensor element type that both Triton's protocol and ONNX Runtime know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// One byte, 0 or 1.
    Bool,
    /// Unsigned 8-bit integer.
    Uint8,
    /// Unsigned 16-bit integer.
    Uint16,
    /// Unsigned 32-bit integer.
    Uint32,
    /// Unsigned 64-bit integer.
    Uint64,
    /// Signed 8-bit integer.
    Int8,
    /// Signed 16-bit integer.
    Int16,
    /// Signed 32-bit integer.
    Int32,
    /// Signed 64-bit integer.
    Int64,
    /// IEEE half precision; raw contents only.
    Fp16,
    /// IEEE single precision.
    Fp32,
    /// IEEE double precision.
    Fp64,
    /// Variable-length byte strings (`TYPE_STRING` in configs, ONNX `string`).
    Bytes,
    /// bfloat16; raw contents only.
    Bf16,
}

impl DataType {
    /// Every type, for exhaustive tests and tables.
    pub const ALL: [DataType; 14] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bytes,
        DataType::Bf16,
    ];

    /// The name used on the wire by KServe v2 and Triton clients.
    pub fn wire_name(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
            DataType::Bf16 => "BF16",
        }
    }

    /// Parses a wire name; `None` for names the protocol does not define.
    pub fn from_wire_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.wire_name() == name)
    }

    /// Size of one element in raw form; `None` for BYTES, whose elements are length-prefixed.
    pub fn element_size(self) -> Option<usize> {
        match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => Some(1),
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 | DataType::Bf16 => Some(2),
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => Some(4),
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => Some(8),
            DataType::Bytes => None,
        }
    }

    /// The `config.pbtxt` enum value for this type.
    pub fn to_config(self) -> ConfigType {
        match self {
            DataType::Bool => ConfigType::TypeBool,
            DataType::Uint8 => ConfigType::TypeUint8,
            DataType::Uint16 => ConfigType::TypeUint16,
            DataType::Uint32 => ConfigType::TypeUint32,
            DataType::Uint64 => ConfigType::TypeUint64,
            DataType::Int8 => ConfigType::TypeInt8,
            DataType::Int16 => ConfigType::TypeInt16,
            DataType::Int32 => ConfigType::TypeInt32,
            DataType::Int64 => ConfigType::TypeInt64,
            DataType::Fp16 => ConfigType::TypeFp16,
            DataType::Fp32 => ConfigType::TypeFp32,
            DataType::Fp64 => ConfigType::TypeFp64,
            DataType::Bytes => ConfigType::TypeString,
            DataType::Bf16 => ConfigType::TypeBf16,
        }
    }

    /// The type for a `config.pbtxt` enum value; `None` for `TYPE_INVALID`.
    pub fn from_config(config: ConfigType) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.to_config() == config)
    }

    /// ONNX Runtime's element type for this type.
    pub fn to_ort(self) -> OrtType {
        match self {
            DataType::Bool => OrtType::Bool,
            DataType::Uint8 => OrtType::Uint8,
            DataType::Uint16 => OrtType::Uint16,
            DataType::Uint32 => OrtType::Uint32,
            DataType::Uint64 => OrtType::Uint64,
            DataType::Int8 => OrtType::Int8,
            DataType::Int16 => OrtType::Int16,
            DataType::Int32 => OrtType::Int32,
            DataType::Int64 => OrtType::Int64,
            DataType::Fp16 => OrtType::Float16,
            DataType::Fp32 => OrtType::Float32,
            DataType::Fp64 => OrtType::Float64,
            DataType::Bytes => OrtType::String,
            DataType::Bf16 => OrtType::Bfloat16,
        }
    }

    /// The type for an ONNX Runtime element type; `None` for types Triton's protocol cannot carry
    /// (complex numbers, 8-bit and 4-bit floats and integers).
    pub fn from_ort(ort: OrtType) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.to_ort() == ort)
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.wire_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips_through_every_naming() {
        for t in DataType::ALL {
            assert_eq!(DataType::from_wire_name(t.wire_name()), Some(t));
            assert_eq!(DataType::from_config(t.to_config()), Some(t));
            assert_eq!(DataType::from_ort(t.to_ort()), Some(t));
        }
    }

    #[test]
    fn config_and_wire_names_differ_only_for_strings() {
        assert_eq!(DataType::Bytes.to_config().as_str_name(), "TYPE_STRING");
        assert_eq!(DataType::Fp32.to_config().as_str_name(), "TYPE_FP32");
        assert_eq!(DataType::from_config(ConfigType::TypeInvalid), None);
        assert_eq!(DataType::from_wire_name("FP33"), None);
    }

    #[test]
    fn element_sizes() {
        assert_eq!(DataType::Bool.element_size(), Some(1));
        assert_eq!(DataType::Bf16.element_size(), Some(2));
        assert_eq!(DataType::Fp64.element_size(), Some(8));
        assert_eq!(DataType::Bytes.element_size(), None);
    }
}

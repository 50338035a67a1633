//! A bounded reader of NumPy's `.npy` format (version 1 to 3: magic, header length, a Python dict literal
//! with `descr`, `fortran_order` and `shape`, then the data in C order) and of `.npz` archives (a zip of
//! `NAME.npy` entries, as `numpy.savez` and `savez_compressed` write them). Only little-endian numeric
//! arrays are read; values are decoded as they are iterated, never copied into a second buffer.

use std::io::{Cursor, Read};

/// The largest baseline file, and the most bytes an `.npz` may hold once inflated.
pub const MAX_BASELINE_BYTES: usize = 64 * 1024 * 1024;
/// The longest `.npy` header (NumPy itself refuses headers above 10 000 bytes by default).
const MAX_HEADER_BYTES: usize = 65_536;
/// The most dimensions an array may have.
const MAX_DIMS: usize = 32;
/// The most arrays an `.npz` may hold.
pub const MAX_NPZ_ARRAYS: usize = 1024;

/// The element types a baseline array may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Element {
    /// `<f2`, `<f4`, `<f8`.
    Float(usize),
    /// `<i1` to `<i8`.
    Int(usize),
    /// `<u1` to `<u8`.
    Uint(usize),
    /// `|b1`.
    Bool,
}

impl Element {
    fn parse(descr: &str) -> Result<Self, String> {
        let (order, kind) = descr.split_at(descr.len().min(1));
        let element = match kind {
            "f2" => Element::Float(2),
            "f4" => Element::Float(4),
            "f8" => Element::Float(8),
            "i1" => Element::Int(1),
            "i2" => Element::Int(2),
            "i4" => Element::Int(4),
            "i8" => Element::Int(8),
            "u1" => Element::Uint(1),
            "u2" => Element::Uint(2),
            "u4" => Element::Uint(4),
            "u8" => Element::Uint(8),
            "b1" => Element::Bool,
            _ => {
                return Err(format!(
                    "field 'descr' is '{descr}', expected a numeric type such as '<f4', '<f8', '<i8' or '|b1'"
                ));
            }
        };
        let little = order == "<" || (order == "|" && element.size() == 1);
        if !little {
            return Err(format!(
                "field 'descr' is '{descr}', expected little-endian ('<') data"
            ));
        }
        Ok(element)
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Element::Float(size) | Element::Int(size) | Element::Uint(size) => size,
            Element::Bool => 1,
        }
    }

    /// One element of `bytes` (exactly `size()` long) as a number.
    fn decode(self, bytes: &[u8]) -> f64 {
        let mut eight = [0u8; 8];
        eight[..bytes.len()].copy_from_slice(bytes);
        let wide = u64::from_le_bytes(eight);
        match self {
            Element::Float(2) => half::f16::from_bits(wide as u16).to_f64(),
            Element::Float(4) => f64::from(f32::from_bits(wide as u32)),
            Element::Float(_) => f64::from_bits(wide),
            Element::Int(size) => {
                let shift = 64 - 8 * size as u32;
                ((wide << shift) as i64 >> shift) as f64
            }
            Element::Uint(_) => wide as f64,
            Element::Bool => f64::from(u8::from(wide != 0)),
        }
    }
}

/// One array read from a file.
#[derive(Debug, Clone)]
pub struct Array {
    /// Its element type.
    pub element: Element,
    /// Its shape (empty for a scalar).
    pub shape: Vec<usize>,
    /// Its data, C order, `shape` product × element size bytes.
    data: Vec<u8>,
}

impl Array {
    /// The raw little-endian elements, in C order, as an owned buffer.
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }

    /// The elements, in C order, as numbers.
    pub fn values(&self) -> impl Iterator<Item = f64> + '_ {
        let element = self.element;
        self.data
            .chunks_exact(element.size())
            .map(move |bytes| element.decode(bytes))
    }
}

/// Parses the `.npy` bytes `bytes`; errors name the field at fault (the caller adds the file).
pub fn parse_npy(bytes: &[u8]) -> Result<Array, String> {
    let (element, shape, offset) = parse_header(bytes)?;
    Ok(Array {
        element,
        shape,
        data: bytes[offset..].to_vec(),
    })
}

/// Parses the `.npy` file `bytes`, keeping its buffer for the data (the header is cut off in place), so
/// that a large file is not held twice.
pub fn parse_npy_owned(mut bytes: Vec<u8>) -> Result<Array, String> {
    let (element, shape, offset) = parse_header(&bytes)?;
    bytes.drain(..offset);
    Ok(Array {
        element,
        shape,
        data: bytes,
    })
}

/// The element type, the shape, and where the data starts, of the `.npy` file `bytes`, whose data length
/// has been checked against the shape.
fn parse_header(bytes: &[u8]) -> Result<(Element, Vec<usize>, usize), String> {
    let rest = bytes
        .strip_prefix(b"\x93NUMPY")
        .ok_or("not a .npy file: it does not start with the magic string \\x93NUMPY")?;
    let (version, rest) = rest
        .split_at_checked(2)
        .ok_or("the file ends inside its header")?;
    let (length, rest) = match version[0] {
        1 => rest
            .split_at_checked(2)
            .map(|(n, rest)| (usize::from(u16::from_le_bytes([n[0], n[1]])), rest)),
        2 | 3 => rest.split_at_checked(4).map(|(n, rest)| {
            let length = u32::from_le_bytes([n[0], n[1], n[2], n[3]]);
            (usize::try_from(length).unwrap_or(usize::MAX), rest)
        }),
        major => {
            return Err(format!(
                "format version {major} is not supported, expected 1, 2 or 3"
            ));
        }
    }
    .ok_or("the file ends inside its header")?;
    if length > MAX_HEADER_BYTES {
        return Err(format!(
            "the header is {length} bytes, over the limit of {MAX_HEADER_BYTES}"
        ));
    }
    let (header, data) = rest
        .split_at_checked(length)
        .ok_or_else(|| format!("the header is {length} bytes but the file ends before"))?;
    let header = std::str::from_utf8(header).map_err(|_| "the header is not text")?;
    let descr = field(header, "descr")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let element = Element::parse(descr)?;
    match field(header, "fortran_order")? {
        "False" => {}
        other => {
            return Err(format!(
                "field 'fortran_order' is {other}, expected False (save the array in C order)"
            ));
        }
    }
    let shape = parse_shape(field(header, "shape")?)?;
    let elements = shape
        .iter()
        .try_fold(1usize, |n, d| n.checked_mul(*d))
        .ok_or("field 'shape' overflows")?;
    let expected = elements
        .checked_mul(element.size())
        .ok_or("field 'shape' overflows")?;
    if data.len() != expected {
        return Err(format!(
            "field 'shape' {shape:?} of '{descr}' needs {expected} data bytes, the file has {}",
            data.len()
        ));
    }
    Ok((element, shape, bytes.len() - data.len()))
}

/// The text of the value of `key` in the header's dict literal, up to the next top-level comma.
fn field<'a>(header: &'a str, key: &str) -> Result<&'a str, String> {
    let missing = || format!("the header has no field '{key}'");
    let start = header
        .find(&format!("'{key}':"))
        .or_else(|| header.find(&format!("\"{key}\":")))
        .ok_or_else(missing)?
        + key.len()
        + 3;
    let value = header[start..].trim_start();
    let end = if value.starts_with('(') {
        value.find(')').map(|i| i + 1)
    } else {
        value.find([',', '}'])
    }
    .ok_or_else(missing)?;
    Ok(value[..end].trim())
}

/// `(3, 4)`, `(5,)` or `()` as dimensions.
fn parse_shape(text: &str) -> Result<Vec<usize>, String> {
    let bad = || format!("field 'shape' is {text}, expected a tuple of whole numbers");
    let inner = text
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(bad)?;
    let dims: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.trim_end_matches('L').parse::<usize>().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    if dims.len() > MAX_DIMS {
        return Err(format!(
            "field 'shape' has {} dimensions, over the limit of {MAX_DIMS}",
            dims.len()
        ));
    }
    Ok(dims)
}

/// The arrays of the `.npz` bytes `bytes`, by name (the entry name without `.npy`), at most
/// [`MAX_BASELINE_BYTES`] inflated in all.
pub fn parse_npz(bytes: &[u8]) -> Result<Vec<(String, Array)>, String> {
    parse_npz_within(bytes, MAX_BASELINE_BYTES)
}

/// The arrays of the `.npz` bytes `bytes`, by name, at most `limit` bytes inflated in all.
pub fn parse_npz_within(bytes: &[u8], limit: usize) -> Result<Vec<(String, Array)>, String> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|error| format!("not a .npz (zip) file: {error}"))?;
    if archive.len() > MAX_NPZ_ARRAYS {
        return Err(format!(
            "the archive has {} entries, over the limit of {MAX_NPZ_ARRAYS}",
            archive.len()
        ));
    }
    let mut budget = limit;
    let mut arrays = Vec::with_capacity(archive.len());
    for index in 0..archive.len() {
        let entry = archive
            .by_index(index)
            .map_err(|error| format!("entry {index}: {error}"))?;
        let name = entry
            .name()
            .map_err(|error| format!("entry {index} has no readable name: {error}"))?
            .into_owned();
        let Some(array_name) = name.strip_suffix(".npy") else {
            return Err(format!("entry '{name}' is not an array ('NAME.npy')"));
        };
        let declared = usize::try_from(entry.size()).unwrap_or(usize::MAX);
        if declared > budget {
            return Err(format!(
                "entry '{name}' is {declared} bytes inflated, over what is left of the limit of \
                 {limit} bytes"
            ));
        }
        let mut data = Vec::with_capacity(declared);
        entry
            .take(budget as u64 + 1)
            .read_to_end(&mut data)
            .map_err(|error| format!("entry '{name}': {error}"))?;
        if data.len() > budget {
            return Err(format!("entry '{name}' inflates past the limit of {limit} bytes"));
        }
        budget -= data.len();
        let array = parse_npy_owned(data).map_err(|error| format!("entry '{name}': {error}"))?;
        arrays.push((array_name.to_owned(), array));
    }
    Ok(arrays)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A version 1 `.npy` file of `descr` with header dict `shape` and `data`.
    pub(in crate::drift) fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut file = b"\x93NUMPY\x01\x00".to_vec();
        file.extend_from_slice(&(header.len() as u16).to_le_bytes());
        file.extend_from_slice(header.as_bytes());
        file.extend_from_slice(data);
        file
    }

    #[test]
    fn numpy_fixtures_read_as_numpy_wrote_them() {
        // Written by numpy (see fixtures/make_fixtures.py): np.arange(6, dtype='<f4').reshape(2, 3)
        // and np.array([-1, 2, -3], dtype='<i8').
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/src/drift/fixtures");
        let floats =
            parse_npy(&std::fs::read(format!("{fixtures}/arange_f4.npy")).expect("fixture")).expect("valid");
        assert_eq!(floats.shape, [2, 3]);
        assert_eq!(
            floats.values().collect::<Vec<_>>(),
            [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        );
        let ints =
            parse_npy(&std::fs::read(format!("{fixtures}/ints_i8.npy")).expect("fixture")).expect("valid");
        assert_eq!(ints.shape, [3]);
        assert_eq!(ints.values().collect::<Vec<_>>(), [-1.0, 2.0, -3.0]);
        let archive =
            parse_npz(&std::fs::read(format!("{fixtures}/pair.npz")).expect("fixture")).expect("valid");
        let names: Vec<&str> = archive.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["x", "mask"]);
        assert_eq!(archive[0].1.values().collect::<Vec<_>>(), [0.5, -0.5]);
        assert_eq!(archive[1].1.element, Element::Bool);
        assert_eq!(archive[1].1.values().collect::<Vec<_>>(), [1.0, 0.0, 1.0]);
    }

    #[test]
    fn every_element_type_decodes() {
        let cases: [(&str, Vec<u8>, f64); 7] = [
            ("<f2", half::f16::from_f32(1.5).to_le_bytes().to_vec(), 1.5),
            ("<f8", (-2.25f64).to_le_bytes().to_vec(), -2.25),
            ("<i2", (-300i16).to_le_bytes().to_vec(), -300.0),
            ("|i1", vec![0xFF], -1.0),
            ("<u4", 4_000_000_000u32.to_le_bytes().to_vec(), 4e9),
            ("|u1", vec![200], 200.0),
            ("|b1", vec![1], 1.0),
        ];
        for (descr, data, expected) in cases {
            let array = parse_npy(&npy(descr, "(1,)", &data)).expect(descr);
            assert_eq!(array.values().collect::<Vec<_>>(), [expected], "{descr}");
        }
    }

    #[test]
    fn malformed_files_name_the_field_at_fault() {
        let cases: [(Vec<u8>, &str); 7] = [
            (b"PK\x03\x04".to_vec(), "magic"),
            (npy(">f4", "(1,)", &[0; 4]), "little-endian"),
            (npy("<U3", "(1,)", &[0; 12]), "'descr' is '<U3'"),
            (npy("<f4", "(2,)", &[0; 4]), "needs 8 data bytes, the file has 4"),
            (npy("<f4", "(a,)", &[]), "field 'shape'"),
            (
                npy("<f4", "(1,)", &[0; 4])
                    .into_iter()
                    .map(|b| if b == b'F' { b'T' } else { b })
                    .collect(),
                "fortran_order",
            ),
            (b"\x93NUMPY\x01\x00\xff\xff".to_vec(), "ends before"),
        ];
        for (bytes, expected) in cases {
            let error = parse_npy(&bytes).expect_err(expected);
            assert!(error.contains(expected), "{error}");
        }
        let missing = b"\x93NUMPY\x01\x00\x0c\x00{'shape': ()}".to_vec();
        assert!(
            parse_npy(&missing)
                .expect_err("no descr")
                .contains("no field 'descr'")
        );
        assert!(parse_npz(b"not a zip").expect_err("zip").contains("not a .npz"));
    }
}

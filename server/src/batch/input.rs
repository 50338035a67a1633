//! The rows of a batch input file, cut into requests: a `.npy` array (for a model of one input), a `.npz`
//! archive of one array per input, or JSON lines of one object per row. Arrays keep the file's buffer and
//! each request takes slices of it; JSON lines are converted to the model's types as each request is made.
//! Shapes are not checked here: the request goes to the model as a client's would, and the core refuses a
//! wrong one with the server's message.

use std::{io::Read, path::Path};

use bytes::Bytes;
use serde_json::Value;

use super::{MAX_INPUT_BYTES, MAX_JSON_LINE_BYTES, MAX_ROWS};
use crate::{
    DataType,
    config::{ModelSpec, TensorSpec},
    drift::npy::{self, Array, Element},
    engine::Request,
};

/// A batch input file, read and matched with the model's inputs.
#[derive(Debug)]
pub enum Inputs {
    /// One array per model input it feeds: the input's index in the model, the bytes of one row, the
    /// dims of one row, and the whole array's data.
    Arrays {
        /// Rows of every array.
        rows: usize,
        /// The arrays, one per input given.
        arrays: Vec<RowArray>,
    },
    /// JSON lines: the file's text and where each row's line starts and ends.
    JsonLines {
        /// The whole file.
        text: Bytes,
        /// Each row's line, as a byte range of `text` without its newline.
        lines: Vec<(usize, usize)>,
    },
}

/// One input's array, cut into rows.
#[derive(Debug)]
pub struct RowArray {
    input: usize,
    row_bytes: usize,
    rows: usize,
    row_dims: Vec<i64>,
    data: Bytes,
}

/// The file formats `ferry batch` reads, known by the file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// NumPy `.npy`: one array, rows along its first dimension.
    Npy,
    /// NumPy `.npz`: one array per input, named as the input.
    Npz,
    /// `.jsonl`: one JSON object per line, `{"INPUT": value, ...}`.
    JsonLines,
}

impl Format {
    /// The format of `path`, by its extension.
    pub fn of(path: &Path) -> Result<Self, String> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("npy") => Ok(Format::Npy),
            Some("npz") => Ok(Format::Npz),
            Some("jsonl" | "ndjson") => Ok(Format::JsonLines),
            _ => Err(format!(
                "{}: the input's format is known by its extension: .npy, .npz or .jsonl",
                path.display()
            )),
        }
    }
}

impl Inputs {
    /// Reads `path` for `spec`'s inputs: the file's size is checked before it is read
    /// ([`MAX_INPUT_BYTES`]), and again while it is, and the row count against [`MAX_ROWS`].
    pub fn read(path: &Path, spec: &ModelSpec) -> Result<Self, String> {
        let format = Format::of(path)?;
        let bytes = read_bounded(path)?;
        let at = |error: String| format!("{}: {error}", path.display());
        let inputs = match format {
            Format::Npy => {
                let [input] = spec.inputs.as_slice() else {
                    return Err(at(format!(
                        "a .npy file holds one array, and model '{}' has {} inputs; give a .npz of one \
                         array per input, named as the inputs",
                        spec.name,
                        spec.inputs.len()
                    )));
                };
                let array = npy::parse_npy_owned(bytes).map_err(at)?;
                let array = RowArray::new(spec, 0, input, &input.name, array).map_err(at)?;
                Inputs::Arrays {
                    rows: array.rows(),
                    arrays: vec![array],
                }
            }
            Format::Npz => {
                let archive = npy::parse_npz_within(&bytes, MAX_INPUT_BYTES).map_err(at)?;
                drop(bytes);
                arrays_for(spec, archive).map_err(at)?
            }
            Format::JsonLines => json_lines(Bytes::from(bytes)).map_err(at)?,
        };
        if inputs.rows() > MAX_ROWS {
            return Err(at(format!(
                "{} rows, over the limit of {MAX_ROWS}",
                inputs.rows()
            )));
        }
        Ok(inputs)
    }

    /// How many rows the file holds.
    pub fn rows(&self) -> usize {
        match self {
            Inputs::Arrays { rows, .. } => *rows,
            Inputs::JsonLines { lines, .. } => lines.len(),
        }
    }

    /// Adds rows `start..end` to `request`, as one tensor per input with the rows as its batch dimension
    /// (no batch dimension when `batched` is false, and then `end - start` is 1).
    pub fn add_rows(
        &self,
        spec: &ModelSpec,
        batched: bool,
        start: usize,
        end: usize,
        mut request: Request,
    ) -> Result<Request, String> {
        let count = (end - start) as i64;
        let shape = |row_dims: &[i64]| -> Vec<i64> {
            let batch = batched.then_some(count);
            batch.into_iter().chain(row_dims.iter().copied()).collect()
        };
        match self {
            Inputs::Arrays { arrays, .. } => {
                for array in arrays {
                    let tensor = &spec.inputs[array.input];
                    let data = array.data.slice(start * array.row_bytes..end * array.row_bytes);
                    request =
                        request.raw_input(&tensor.name, tensor.data_type, &shape(&array.row_dims), data);
                }
            }
            Inputs::JsonLines { text, lines } => {
                let rows = lines[start..end]
                    .iter()
                    .map(|&(from, to)| {
                        serde_json::from_slice::<serde_json::Map<String, Value>>(&text[from..to])
                            .map_err(|error| format!("not a JSON object: {error}"))
                    })
                    .enumerate()
                    .map(|(offset, row)| row.map_err(|error| format!("row {}: {error}", start + offset)))
                    .collect::<Result<Vec<_>, _>>()?;
                for (index, row) in rows.iter().enumerate() {
                    if let Some(name) = row
                        .keys()
                        .find(|name| !spec.inputs.iter().any(|t| &t.name == *name))
                    {
                        return Err(format!(
                            "row {}: model '{}' has no input '{name}'; its inputs are {:?}",
                            start + index,
                            spec.name,
                            spec.inputs.iter().map(|t| t.name.as_str()).collect::<Vec<_>>()
                        ));
                    }
                }
                for tensor in &spec.inputs {
                    let mut raw = Vec::new();
                    let mut dims: Option<Vec<i64>> = None;
                    let mut given = 0;
                    for (index, row) in rows.iter().enumerate() {
                        let Some(value) = row.get(&tensor.name) else {
                            continue;
                        };
                        given += 1;
                        let at = |error: String| {
                            format!("row {}: input '{}': {error}", start + index, tensor.name)
                        };
                        let row_dims = encode_json(value, tensor, &mut raw).map_err(at)?;
                        match &dims {
                            None => dims = Some(row_dims),
                            Some(first) if *first != row_dims => {
                                return Err(at(format!(
                                    "shape {row_dims:?}, where row {start} of the same request has {first:?}; \
                                     use --rows-per-request 1 for rows of different shapes"
                                )));
                            }
                            Some(_) => {}
                        }
                    }
                    match dims {
                        Some(dims) if given == rows.len() => {
                            request = request.raw_input(
                                &tensor.name,
                                tensor.data_type,
                                &shape(&dims),
                                Bytes::from(raw),
                            );
                        }
                        Some(_) => {
                            return Err(format!(
                                "rows {start} to {}: input '{}' is given in some rows and not others of one \
                                 request; use --rows-per-request 1",
                                end - 1,
                                tensor.name
                            ));
                        }
                        // Left out of every row: the core refuses it unless it is optional.
                        None => {}
                    }
                }
            }
        }
        Ok(request)
    }
}

impl RowArray {
    /// `array`, named `name` in the file, as the rows of input `index` (`tensor`) of `spec`.
    fn new(
        spec: &ModelSpec,
        index: usize,
        tensor: &TensorSpec,
        name: &str,
        array: Array,
    ) -> Result<Self, String> {
        let given = array_type(array.element);
        if given != tensor.data_type {
            return Err(format!(
                "array '{name}' holds {} elements, and input '{}' of model '{}' is {}; convert it (numpy: \
                 .astype) before the run",
                given.wire_name(),
                tensor.name,
                spec.name,
                tensor.data_type.wire_name()
            ));
        }
        let Some((&rows, row_dims)) = array.shape.split_first() else {
            return Err(format!(
                "array '{name}' is a scalar; rows are along its first dimension"
            ));
        };
        let row_bytes = row_dims.iter().product::<usize>() * array.element.size();
        if row_bytes == 0 && rows > 0 {
            return Err(format!(
                "array '{name}' has rows of no elements (shape {:?})",
                array.shape
            ));
        }
        Ok(RowArray {
            input: index,
            row_bytes,
            rows,
            row_dims: row_dims
                .iter()
                .map(|&d| i64::try_from(d).unwrap_or(i64::MAX))
                .collect(),
            data: Bytes::from(array.into_data()),
        })
    }

    fn rows(&self) -> usize {
        self.rows
    }
}

/// The protocol type of a `.npy` element type.
fn array_type(element: Element) -> DataType {
    match element {
        Element::Float(2) => DataType::Fp16,
        Element::Float(4) => DataType::Fp32,
        Element::Float(_) => DataType::Fp64,
        Element::Int(1) => DataType::Int8,
        Element::Int(2) => DataType::Int16,
        Element::Int(4) => DataType::Int32,
        Element::Int(_) => DataType::Int64,
        Element::Uint(1) => DataType::Uint8,
        Element::Uint(2) => DataType::Uint16,
        Element::Uint(4) => DataType::Uint32,
        Element::Uint(_) => DataType::Uint64,
        Element::Bool => DataType::Bool,
    }
}

/// The arrays of a `.npz` matched with `spec`'s inputs by name: every array must name an input, and every
/// array must have as many rows.
fn arrays_for(spec: &ModelSpec, archive: Vec<(String, Array)>) -> Result<Inputs, String> {
    let mut arrays = Vec::with_capacity(archive.len());
    for (name, array) in archive {
        let Some(index) = spec.inputs.iter().position(|tensor| tensor.name == name) else {
            return Err(format!(
                "array '{name}' names no input of model '{}'; its inputs are {:?}",
                spec.name,
                spec.inputs.iter().map(|t| t.name.as_str()).collect::<Vec<_>>()
            ));
        };
        arrays.push((
            name.clone(),
            RowArray::new(spec, index, &spec.inputs[index], &name, array)?,
        ));
    }
    let Some(rows) = arrays.first().map(|(_, array)| array.rows()) else {
        return Err("the archive holds no array".to_owned());
    };
    if let Some((name, array)) = arrays.iter().find(|(_, array)| array.rows() != rows) {
        return Err(format!(
            "array '{name}' has {} rows and array '{}' {rows}; every array needs one row per input row",
            array.rows(),
            arrays[0].0
        ));
    }
    Ok(Inputs::Arrays {
        rows,
        arrays: arrays.into_iter().map(|(_, array)| array).collect(),
    })
}

/// The rows of a JSON-lines file: one per line, a final newline optional, no blank line, each line at
/// most [`MAX_JSON_LINE_BYTES`].
fn json_lines(text: Bytes) -> Result<Inputs, String> {
    let mut lines = Vec::new();
    let mut from = 0;
    while from < text.len() {
        let to = text[from..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(text.len(), |offset| from + offset);
        let line = lines.len() + 1;
        if to - from > MAX_JSON_LINE_BYTES {
            return Err(format!(
                "line {line} is {} bytes, over the limit of {MAX_JSON_LINE_BYTES}",
                to - from
            ));
        }
        if text[from..to].iter().all(u8::is_ascii_whitespace) {
            return Err(format!("line {line} is blank; every line is one row"));
        }
        if lines.len() == MAX_ROWS {
            return Err(format!("more than {MAX_ROWS} rows, over the limit"));
        }
        lines.push((from, to));
        from = to + 1;
    }
    Ok(Inputs::JsonLines { text, lines })
}

/// Appends the elements of `value` (a number, a string, a boolean, or nested arrays of them) to `raw` as
/// `tensor`'s type, and returns its dims: its nesting's, or `tensor`'s own dims when those are fixed and a
/// flat list has as many elements.
fn encode_json(value: &Value, tensor: &TensorSpec, raw: &mut Vec<u8>) -> Result<Vec<i64>, String> {
    let mut dims = Vec::new();
    let mut level = value;
    while let Value::Array(items) = level {
        dims.push(items.len() as i64);
        let Some(first) = items.first() else { break };
        level = first;
    }
    let mut count = 0usize;
    encode_values(value, tensor.data_type, raw, &mut count)?;
    let fixed = tensor.dims.iter().all(|&d| d >= 0);
    if dims.len() == 1 && fixed && tensor.dims.iter().product::<i64>() == count as i64 {
        return Ok(tensor.dims.clone());
    }
    let nested: i64 = dims.iter().product();
    if nested != count as i64 {
        return Err(format!(
            "a ragged nested list ({count} values under dims {dims:?})"
        ));
    }
    Ok(dims)
}

fn encode_values(
    value: &Value,
    data_type: DataType,
    raw: &mut Vec<u8>,
    count: &mut usize,
) -> Result<(), String> {
    if let Value::Array(items) = value {
        return items
            .iter()
            .try_for_each(|item| encode_values(item, data_type, raw, count));
    }
    *count += 1;
    let wrong = || format!("{} values, got {value}", data_type.wire_name());
    let int = || {
        value
            .as_i64()
            .map(i128::from)
            .or_else(|| value.as_u64().map(i128::from))
            .ok_or_else(wrong)
    };
    let float = || value.as_f64().ok_or_else(wrong);
    macro_rules! integer {
        ($t:ty) => {{
            let value = int()?;
            let value = <$t>::try_from(value)
                .map_err(|_| format!("{value} is out of the range of {}", data_type.wire_name()))?;
            raw.extend_from_slice(&value.to_le_bytes());
        }};
    }
    match data_type {
        DataType::Bool => raw.push(u8::from(value.as_bool().ok_or_else(wrong)?)),
        DataType::Uint8 => integer!(u8),
        DataType::Uint16 => integer!(u16),
        DataType::Uint32 => integer!(u32),
        DataType::Uint64 => integer!(u64),
        DataType::Int8 => integer!(i8),
        DataType::Int16 => integer!(i16),
        DataType::Int32 => integer!(i32),
        DataType::Int64 => integer!(i64),
        DataType::Fp16 => raw.extend_from_slice(&half::f16::from_f64(float()?).to_le_bytes()),
        DataType::Bf16 => raw.extend_from_slice(&half::bf16::from_f64(float()?).to_le_bytes()),
        DataType::Fp32 => raw.extend_from_slice(&(float()? as f32).to_le_bytes()),
        DataType::Fp64 => raw.extend_from_slice(&float()?.to_le_bytes()),
        DataType::Bytes => {
            let text = value.as_str().ok_or_else(wrong)?;
            let length = u32::try_from(text.len()).map_err(|_| "a string over 4 GiB".to_owned())?;
            raw.extend_from_slice(&length.to_le_bytes());
            raw.extend_from_slice(text.as_bytes());
        }
    }
    Ok(())
}

/// The file at `path`, refused before it is read when over [`MAX_INPUT_BYTES`], and read at most one byte
/// past it (a file that grows meanwhile).
fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let at = |error: std::io::Error| format!("{}: {error}", path.display());
    let file = std::fs::File::open(path).map_err(at)?;
    let size = file.metadata().map_err(at)?.len();
    let over = |size: u64| {
        format!(
            "{}: the file is {size} bytes, over the limit of {MAX_INPUT_BYTES} bytes",
            path.display()
        )
    };
    if size > MAX_INPUT_BYTES as u64 {
        return Err(over(size));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(MAX_INPUT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(at)?;
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(over(bytes.len() as u64));
    }
    Ok(bytes)
}

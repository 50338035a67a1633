//! The output of `ferry batch`: JSON lines, a header line then one line per input row in row order,
//! which is what makes a run resumable. Rows are written whole and in order, a line at a time, so a run
//! that stops (a failed request, a kill, a full disk) leaves complete lines for rows `0..k`, then at most
//! one partial line. A new run over the same output reads it back, checks the header and that line `i`
//! holds row `i`, cuts the partial line off, and starts at row `k`.
//!
//! ```text
//! {"ferry_batch":1,"model":"simple","rows":1000,"input":"inputs.npz"}
//! {"row":0,"outputs":{"OUTPUT0":[...],"OUTPUT1":[...]}}
//! ```

use std::{
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, BufWriter, Read, Seek, Write},
    path::{Path, PathBuf},
};

use serde_json::Value;

use super::MAX_OUTPUT_LINE_BYTES;
use crate::{DataType, engine::Response};

/// The output format's version, in the header line.
const FORMAT_VERSION: u64 = 1;

/// An output file open for appending rows.
#[derive(Debug)]
pub struct OutputFile {
    path: PathBuf,
    writer: BufWriter<File>,
    /// The next row to write.
    next_row: usize,
    line: Vec<u8>,
}

impl OutputFile {
    /// Opens `path` for a run of `model` over `rows` rows of `input`: a new file gets the header; an
    /// existing one is resumed after its last complete row, once its header is found to be of the same
    /// model and row count.
    pub fn open(path: &Path, model: &str, rows: usize, input: &str) -> Result<Self, String> {
        let at = |error: std::io::Error| format!("{}: {error}", path.display());
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(at)?;
        let (next_row, keep) = if file.metadata().map_err(at)?.len() == 0 {
            let header = serde_json::json!({
                "ferry_batch": FORMAT_VERSION, "model": model, "rows": rows, "input": input,
            });
            let mut line = header.to_string().into_bytes();
            line.push(b'\n');
            file.write_all(&line).map_err(at)?;
            (0, line.len() as u64)
        } else {
            resume_point(&mut file, model, rows).map_err(|error| format!("{}: {error}", path.display()))?
        };
        // Whatever follows the last complete row (a line cut short when the last run stopped) goes.
        file.set_len(keep).map_err(at)?;
        file.seek(std::io::SeekFrom::Start(keep)).map_err(at)?;
        Ok(OutputFile {
            path: path.to_path_buf(),
            writer: BufWriter::with_capacity(1 << 20, file),
            next_row,
            line: Vec::new(),
        })
    }

    /// The first row not written yet.
    pub fn next_row(&self) -> usize {
        self.next_row
    }

    /// Writes the rows that `response` answers, starting at row [`OutputFile::next_row`]: `rows` of them
    /// along each output's batch dimension (`batched`), or the one row of an unbatched model.
    pub fn write_rows(&mut self, response: &Response, rows: usize, batched: bool) -> Result<(), String> {
        let mut outputs = Vec::with_capacity(response.outputs.len());
        for output in &response.outputs {
            let data_type = DataType::from_wire_name(&output.datatype)
                .ok_or_else(|| format!("output '{}' has type {}", output.name, output.datatype))?;
            let dims: Vec<usize> = output
                .shape
                .iter()
                .map(|&d| usize::try_from(d).unwrap_or(0))
                .collect();
            let row_dims = if batched {
                dims.get(1..).unwrap_or_default()
            } else {
                &dims[..]
            }
            .to_vec();
            if batched && dims.first() != Some(&rows) {
                return Err(format!(
                    "output '{}' has shape {:?}, expected {rows} rows first",
                    output.name, output.shape
                ));
            }
            let elements = elements(data_type, &output.data).ok_or_else(|| {
                format!(
                    "output '{}' has malformed {} contents",
                    output.name, output.datatype
                )
            })?;
            let per_row: usize = row_dims.iter().product();
            if elements.len() != per_row * rows {
                return Err(format!(
                    "output '{}' has {} elements, expected {} for shape {:?}",
                    output.name,
                    elements.len(),
                    per_row * rows,
                    output.shape
                ));
            }
            outputs.push((&output.name, row_dims, per_row, elements));
        }
        for row in 0..rows {
            self.line.clear();
            self.line.extend_from_slice(b"{\"row\":");
            self.line
                .extend_from_slice((self.next_row + row).to_string().as_bytes());
            self.line.extend_from_slice(b",\"outputs\":{");
            for (index, (name, row_dims, per_row, elements)) in outputs.iter().enumerate() {
                if index > 0 {
                    self.line.push(b',');
                }
                serde_json::to_writer(&mut self.line, name).map_err(|error| error.to_string())?;
                self.line.push(b':');
                let values = &elements[row * per_row..(row + 1) * per_row];
                nested(&mut self.line, row_dims, values);
            }
            self.line.extend_from_slice(b"}}\n");
            self.writer
                .write_all(&self.line)
                .map_err(|error| format!("{}: {error}", self.path.display()))?;
        }
        self.next_row += rows;
        Ok(())
    }

    /// Writes what is buffered to the file.
    pub fn flush(&mut self) -> Result<(), String> {
        self.writer
            .flush()
            .map_err(|error| format!("{}: {error}", self.path.display()))
    }

    /// Writes what is buffered and waits for it to reach the disk.
    pub fn finish(mut self) -> Result<(), String> {
        self.flush()?;
        self.writer
            .get_ref()
            .sync_all()
            .map_err(|error| format!("{}: {error}", self.path.display()))
    }
}

/// Where an existing output resumes: the next row, and the length of its complete lines. Every complete
/// line is read (at most [`MAX_OUTPUT_LINE_BYTES`] each) and must be the next row; a last line without its
/// newline was cut short and is dropped.
fn resume_point(file: &mut File, model: &str, rows: usize) -> Result<(usize, u64), String> {
    let mut reader = BufReader::with_capacity(1 << 20, &mut *file);
    let mut line = Vec::new();
    let mut kept = 0u64;
    let mut next_row = 0usize;
    let mut number = 0usize;
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_OUTPUT_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|error| error.to_string())?;
        number += 1;
        if read == 0 || line.last() != Some(&b'\n') {
            if line.len() > MAX_OUTPUT_LINE_BYTES {
                return Err(format!(
                    "line {number} is over {MAX_OUTPUT_LINE_BYTES} bytes; not an output of ferry batch"
                ));
            }
            break;
        }
        let value: Value = serde_json::from_slice(&line).map_err(|error| {
            format!("line {number} is not JSON ({error}); not an output of ferry batch, or edited since")
        })?;
        if number == 1 {
            check_header(&value, model, rows)?;
        } else if value.get("row").and_then(Value::as_u64) == Some(next_row as u64) {
            next_row += 1;
        } else {
            return Err(format!(
                "line {number} is not row {next_row}; the output was edited since, or is not of this run"
            ));
        }
        kept += read as u64;
    }
    if number == 1 {
        // Not even a complete header: start over.
        return Err("the file holds no complete header line; remove it to start over".to_owned());
    }
    Ok((next_row, kept))
}

/// Checks that a resumed output's header is of the same model and row count.
fn check_header(header: &Value, model: &str, rows: usize) -> Result<(), String> {
    if header.get("ferry_batch").and_then(Value::as_u64) != Some(FORMAT_VERSION) {
        return Err("line 1 is not the header of a ferry batch output".to_owned());
    }
    let written_model = header.get("model").and_then(Value::as_str).unwrap_or_default();
    let written_rows = header.get("rows").and_then(Value::as_u64).unwrap_or_default();
    if written_model != model || written_rows != rows as u64 {
        return Err(format!(
            "the output was written for model '{written_model}' over {written_rows} rows, and this run is \
             model '{model}' over {rows} rows; give another --output, or remove it to start over"
        ));
    }
    Ok(())
}

/// One output element, as JSON writes it.
#[derive(Debug, Clone)]
enum Scalar {
    Int(i64),
    Uint(u64),
    Float(f64),
    /// FP32, and FP16 and BF16 widened, written with the fewest digits that read back as the same `f32`.
    Float32(f32),
    Bool(bool),
    Text(String),
}

/// The elements of raw contents of `data_type`; `None` when they are malformed.
fn elements(data_type: DataType, data: &[u8]) -> Option<Vec<Scalar>> {
    if data_type == DataType::Bytes {
        let mut elements = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let (prefix, tail) = rest.split_at_checked(4)?;
            let length = u32::from_le_bytes(prefix.try_into().ok()?) as usize;
            let (element, tail) = tail.split_at_checked(length)?;
            elements.push(Scalar::Text(String::from_utf8_lossy(element).into_owned()));
            rest = tail;
        }
        return Some(elements);
    }
    let size = data_type.element_size()?;
    if !data.len().is_multiple_of(size) {
        return None;
    }
    let scalar = |b: &[u8]| {
        let mut eight = [0u8; 8];
        eight[..b.len()].copy_from_slice(b);
        let wide = u64::from_le_bytes(eight);
        let signed = |bits: u32| ((wide << (64 - bits)) as i64) >> (64 - bits);
        match data_type {
            DataType::Bool => Scalar::Bool(wide != 0),
            DataType::Uint8 | DataType::Uint16 | DataType::Uint32 | DataType::Uint64 => Scalar::Uint(wide),
            DataType::Int8 => Scalar::Int(signed(8)),
            DataType::Int16 => Scalar::Int(signed(16)),
            DataType::Int32 => Scalar::Int(signed(32)),
            DataType::Int64 => Scalar::Int(wide as i64),
            DataType::Fp16 => Scalar::Float32(half::f16::from_bits(wide as u16).to_f32()),
            DataType::Bf16 => Scalar::Float32(half::bf16::from_bits(wide as u16).to_f32()),
            DataType::Fp32 => Scalar::Float32(f32::from_bits(wide as u32)),
            DataType::Fp64 | DataType::Bytes => Scalar::Float(f64::from_bits(wide)),
        }
    };
    Some(data.chunks_exact(size).map(scalar).collect())
}

/// Writes `values` as nested JSON lists of `dims` (a bare value for no dims).
fn nested(out: &mut Vec<u8>, dims: &[usize], values: &[Scalar]) {
    let Some((&first, rest)) = dims.split_first() else {
        if let Some(value) = values.first() {
            scalar(out, value);
        }
        return;
    };
    let step: usize = rest.iter().product();
    out.push(b'[');
    for index in 0..first {
        if index > 0 {
            out.push(b',');
        }
        nested(out, rest, &values[index * step..(index + 1) * step]);
    }
    out.push(b']');
}

fn scalar(out: &mut Vec<u8>, value: &Scalar) {
    // Writing to a Vec cannot fail; a float that JSON cannot hold (NaN, infinity) becomes null.
    let _ = match value {
        Scalar::Int(value) => serde_json::to_writer(&mut *out, value),
        Scalar::Uint(value) => serde_json::to_writer(&mut *out, value),
        Scalar::Float(value) => serde_json::to_writer(&mut *out, value),
        Scalar::Float32(value) => serde_json::to_writer(&mut *out, value),
        Scalar::Bool(value) => serde_json::to_writer(&mut *out, value),
        Scalar::Text(value) => serde_json::to_writer(&mut *out, value),
    };
}

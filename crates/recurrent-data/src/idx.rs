//! IDX files, the format of MNIST (plain or gzip).
//!
//! Layout: two zero bytes, a type byte (0x08 = unsigned byte, the only type
//! MNIST uses and the only one read here), the number of dimensions, one
//! big-endian u32 per dimension, then the values in row-major order.

use super::{open_maybe_gz, read_at_most, read_up_to};
use recurrent::error::{data_err, Result};
use std::path::Path;

/// An IDX array of unsigned bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idx {
    /// The dimensions, outermost first (MNIST images: `[N, 28, 28]`,
    /// labels: `[N]`).
    pub dims: Vec<usize>,
    /// The values, row-major; `data.len()` is the product of `dims`.
    pub data: Vec<u8>,
}

/// Name of an IDX type byte, for the "not supported" message.
fn type_name(code: u8) -> &'static str {
    match code {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0B => "i16",
        0x0C => "i32",
        0x0D => "f32",
        0x0E => "f64",
        _ => "unknown type",
    }
}

/// Reads an IDX file of unsigned bytes; gzip is recognised by its magic
/// bytes, so `t10k-images-idx3-ubyte.gz` and its unpacked twin both load.
///
/// Errors name the file and the problem: bad magic, a type other than
/// 0x08, a header cut short, or a data length that differs from the product
/// of the dimensions (stating the expected and found byte counts; a
/// truncated download is the usual cause).
pub fn read_idx(path: &Path) -> Result<Idx> {
    let mut opened = open_maybe_gz(path)?;
    let err = |problem: String| Err(data_err(path, None, problem));
    // The header first (at most 4 + 4 * 255 bytes), then exactly the data it
    // declares: a gzip stream is never decompressed past that, and the
    // declared size is checked against the file before it is allocated.
    let head = read_up_to(path, &mut opened.reader, 4)?;
    if head.is_empty() {
        return err("file is empty".into());
    }
    if head.len() < 4 {
        return err(format!("truncated IDX header: expected at least 4 bytes, found {}", head.len()));
    }
    if head[0] != 0 || head[1] != 0 {
        return err(format!(
            "not an IDX file: magic starts with {:#04x} {:#04x}, expected 0x00 0x00",
            head[0], head[1]
        ));
    }
    if head[2] != 0x08 {
        return err(format!(
            "IDX type {:#04x} ({}) is not supported: only 0x08 (unsigned byte)",
            head[2],
            type_name(head[2])
        ));
    }
    let ndims = usize::from(head[3]);
    if ndims == 0 {
        return err("IDX header declares 0 dimensions".into());
    }
    let header_len = 4 + 4 * ndims;
    let raw = read_up_to(path, &mut opened.reader, 4 * ndims as u64)?;
    if raw.len() < 4 * ndims {
        return err(format!(
            "truncated IDX header: {ndims} dimensions need {header_len} bytes, found {}",
            4 + raw.len()
        ));
    }
    let dims: Vec<usize> = raw.chunks_exact(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize).collect();
    let shape = dims.iter().map(usize::to_string).collect::<Vec<_>>().join("x");
    // checked_mul: a corrupt header could claim more elements than memory.
    let Some(expected) = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)) else {
        return err(format!("IDX dimensions {shape} are too large"));
    };
    // What the file can hold: a plain file exactly its size less the
    // header; a gzip stream at most 1032 bytes per compressed byte (the
    // largest expansion deflate allows).
    if !opened.gzip {
        let found = opened.disk_size.saturating_sub(header_len as u64);
        if found != expected as u64 {
            return err(format!("IDX data for dimensions {shape}: expected {expected} bytes, found {found}"));
        }
    } else if expected as u64 > opened.disk_size.saturating_mul(1032) {
        return err(format!(
            "IDX header declares {shape} = {expected} bytes of data, more than the file's {} compressed bytes can hold",
            opened.disk_size
        ));
    }
    let data = read_at_most(path, &mut opened.reader, expected as u64, expected as u64)?;
    let Some(data) = data else {
        return err(format!("IDX data for dimensions {shape}: expected {expected} bytes, found more"));
    };
    if data.len() != expected {
        return err(format!("IDX data for dimensions {shape}: expected {expected} bytes, found {}", data.len()));
    }
    Ok(Idx { dims, data })
}

/// `(T, I)` of the sequences [`mnist_sequences`] makes from `images`
/// (`[N, R, C]`): `(R, C)` row by row (28 steps of 28 pixels), or
/// `(R * C, 1)` pixel by pixel (784 steps of one pixel, the long-memory
/// benchmark of the IRNN and uRNN papers).
pub fn mnist_shape(images: &Idx, pixel_by_pixel: bool) -> Result<(usize, usize)> {
    match images.dims.as_slice() {
        // Images without pixels would make N empty sequences out of nothing.
        &[_, rows, cols] if rows == 0 || cols == 0 => {
            Err(recurrent::error::shape_err("MNIST images", "rows and columns of at least 1", format!("{rows}x{cols}")))
        }
        &[_, rows, cols] if pixel_by_pixel => rows
            .checked_mul(cols)
            .map(|t| (t, 1))
            .ok_or_else(|| recurrent::error::shape_err("MNIST images", "a sane size", format!("{rows}x{cols}"))),
        &[_, rows, cols] => Ok((rows, cols)),
        dims => Err(recurrent::error::shape_err("MNIST images", "[N, rows, cols]", format!("{dims:?}"))),
    }
}

/// Turns MNIST images `[N, R, C]` and labels `[N]` into one flattened
/// `[T * I]` sequence per image, pixels scaled from 0..=255 to [0, 1], and
/// the labels.
///
/// Both readings keep the pixels in row-major order, so the flattened
/// buffer is the same; `pixel_by_pixel` selects the `(T, I)` it is meant
/// as, which [`mnist_shape`] returns (and the shape is validated here for
/// both). Errors when the image and label counts differ.
pub fn mnist_sequences(images: &Idx, labels: &Idx, pixel_by_pixel: bool) -> Result<(Vec<Vec<f32>>, Vec<u8>)> {
    let (t, i) = mnist_shape(images, pixel_by_pixel)?;
    let &[count] = labels.dims.as_slice() else {
        return Err(recurrent::error::shape_err("MNIST labels", "[N]", format!("{:?}", labels.dims)));
    };
    let n = images.dims[0];
    if n != count {
        return Err(recurrent::error::shape_err("MNIST labels", format!("{n} labels (one per image)"), count));
    }
    let per_image = t * i;
    // read_idx guarantees the data length, but an Idx may be built by hand.
    recurrent::error::check_len("MNIST images", images.data.len(), n * per_image, "N x rows x cols")?;
    recurrent::error::check_len("MNIST labels", labels.data.len(), n, "N")?;
    let sequences = (0..n)
        .map(|k| images.data[k * per_image..(k + 1) * per_image].iter().map(|&p| f32::from(p) / 255.0).collect())
        .collect();
    Ok((sequences, labels.data.clone()))
}

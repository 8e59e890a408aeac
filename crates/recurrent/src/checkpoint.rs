//! Checkpoints: a safetensors file whose tensor names are exactly the PyTorch
//! `state_dict` names of the usual model (`emb.*`, `rnn.*`, `fc.*`), with
//! recurrent's configuration as JSON under the metadata key `recurrent`
//! (schema in docs/checkpoint-format.md). Files are written atomically: to a temporary file
//! in the same folder, flushed, then renamed over the target, so a failed or
//! interrupted run never leaves a half-written checkpoint behind.

use crate::error::{data_err, Error, Result};
use crate::float::Float;
use crate::model::{Model, ModelConfig};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// Metadata key holding recurrent's JSON.
pub const META_KEY: &str = "recurrent";
/// Value of `format` in the metadata.
pub const FORMAT: &str = "recurrent-checkpoint";
/// The schema version written and the only one read.
pub const VERSION: u32 = 1;

/// What recurrent stores beside the tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Always `recurrent-checkpoint`.
    pub format: String,
    /// Schema version (1).
    pub version: u32,
    /// Cell, sizes, layers, direction, head, loss.
    pub model: ModelConfig,
    /// Task description: kind, normalisation, vocabulary, class labels...
    #[serde(default)]
    pub task: serde_json::Value,
}

impl CheckpointMeta {
    /// Metadata for `model` and a task description.
    pub fn new(model: &ModelConfig, task: serde_json::Value) -> Self {
        CheckpointMeta { format: FORMAT.into(), version: VERSION, model: model.clone(), task }
    }
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| data_err(path, None, "not a file path"))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(data_err(path, None, format!("cannot write: {e}")));
    }
    Ok(())
}

fn to_bytes<F: Float>(v: &[F]) -> Vec<u8> {
    v.iter().flat_map(|x| (x.to_f32().unwrap_or(f32::NAN)).to_le_bytes()).collect()
}

/// Serialises named f32 tensors with a metadata map into safetensors bytes.
pub fn serialize_tensors(tensors: &[(String, Vec<usize>, Vec<u8>)], meta: HashMap<String, String>) -> Result<Vec<u8>> {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, s, b)| TensorView::new(Dtype::F32, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| data_err("<checkpoint>", None, format!("cannot build tensor: {e}")))?;
    safetensors::serialize(views, Some(meta))
        .map_err(|e| data_err("<checkpoint>", None, format!("cannot serialise: {e}")))
}

/// Saves a model (as f32) with its metadata to `path`, atomically.
pub fn save<F: Float>(path: &Path, model: &Model<F>, task: serde_json::Value) -> Result<()> {
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = model
        .table
        .specs()
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.clone(), s.shape.clone(), to_bytes(model.table.view(&model.params, i))))
        .collect();
    let meta = CheckpointMeta::new(&model.cfg, task);
    let json = serde_json::to_string(&meta).map_err(|e| data_err(path, None, e.to_string()))?;
    let bytes = serialize_tensors(&tensors, HashMap::from([(META_KEY.to_string(), json)]))?;
    write_atomic(path, &bytes)
}

/// Reads every tensor of a safetensors file as f64 values (F32, F64, F16
/// and BF16 accepted), with the metadata map.
pub fn read_tensors(path: &Path) -> Result<(Vec<(String, Vec<usize>, Vec<f64>)>, HashMap<String, String>)> {
    // Only a regular file: a FIFO would block, a device never end.
    let info = std::fs::metadata(path).map_err(|e| data_err(path, None, format!("cannot read: {}", io_text(&e))))?;
    if !info.is_file() {
        return Err(data_err(path, None, "is not a regular file (a checkpoint must be a safetensors file)"));
    }
    let bytes = std::fs::read(path).map_err(|e| data_err(path, None, format!("cannot read: {}", io_text(&e))))?;
    parse_tensors(&bytes, path)
}

/// Named tensors as `read_tensors` returns them: (name, shape, values).
pub type NamedTensors = Vec<(String, Vec<usize>, Vec<f64>)>;

/// `read_tensors` of bytes already in memory (`path` names them in errors).
pub fn parse_tensors(bytes: &[u8], path: &Path) -> Result<(NamedTensors, HashMap<String, String>)> {
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| data_err(path, None, format!("not a safetensors file: {e}")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let st =
        SafeTensors::deserialize(bytes).map_err(|e| data_err(path, None, format!("corrupt safetensors file: {e}")))?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        let d = view.data();
        let vals: Vec<f64> = match view.dtype() {
            Dtype::F32 => d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect(),
            Dtype::F64 => d.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect(),
            Dtype::BF16 => d
                .chunks_exact(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16) as f64)
                .collect(),
            Dtype::F16 => d.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])) as f64).collect(),
            other => {
                return Err(data_err(path, None, format!("tensor {name} has dtype {other:?}; expected a float type")))
            }
        };
        out.push((name, view.shape().to_vec(), vals));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((out, meta))
}

/// An I/O error without the OS code suffix (" (os error 2)").
fn io_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// Checks the sizes the metadata declares against the tensors the file
/// really holds, before a model of those sizes is allocated: the number of
/// parameters the configuration implies ([`crate::memory::param_count`],
/// computed without allocating) must equal the number of values in the
/// file, so metadata claiming 10^9 layers or a 2^32-wide head is refused
/// by arithmetic alone. The shapes are then checked tensor by tensor when
/// the values are loaded.
pub fn check_meta_against_tensors(
    path: &Path,
    model: &ModelConfig,
    tensors: &[(String, Vec<usize>, Vec<f64>)],
) -> Result<()> {
    let need = crate::memory::param_count(model);
    let have: u128 = tensors.iter().map(|(_, _, v)| v.len() as u128).sum();
    if need != have {
        return Err(data_err(
            path,
            None,
            format!(
                "metadata \"{META_KEY}\".model ({}) implies {need} parameters but the file holds {have} values",
                crate::memory::describe(model)
            ),
        ));
    }
    Ok(())
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match exp {
        0 if man == 0 => sign,
        0 => {
            // subnormal: renormalise
            let mut e = 127 - 15 + 1;
            let mut m = man;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((m & 0x3ff) << 13)
        }
        31 => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// Loads a checkpoint written by `save` or from PyTorch as README.md shows.
pub fn load<F: Float>(path: &Path) -> Result<(Model<F>, CheckpointMeta)> {
    let (tensors, meta) = read_tensors(path)?;
    let json = meta.get(META_KEY).ok_or_else(|| {
        data_err(
            path,
            None,
            format!(
                "no \"{META_KEY}\" metadata: save with metadata={{\"{META_KEY}\": json.dumps(config)}} (see README)"
            ),
        )
    })?;
    let meta: CheckpointMeta = serde_json::from_str(json)
        .map_err(|e| data_err(path, None, format!("metadata \"{META_KEY}\" is not valid: {e}")))?;
    if meta.format != FORMAT {
        return Err(data_err(path, None, format!("metadata format is \"{}\", expected \"{FORMAT}\"", meta.format)));
    }
    if meta.version != VERSION {
        return Err(data_err(
            path,
            None,
            format!("metadata version {} is not supported: this recurrent reads version {VERSION}", meta.version),
        ));
    }
    meta.model.validate().map_err(|e| data_err(path, None, format!("model config: {e}")))?;
    check_meta_against_tensors(path, &meta.model, &tensors)?;
    let mut model =
        Model::<F>::zeros(meta.model.clone()).map_err(|e| data_err(path, None, format!("model config: {e}")))?;
    let named: Vec<(String, Vec<usize>, Vec<F>)> =
        tensors.into_iter().map(|(n, s, v)| (n, s, v.into_iter().map(F::of).collect())).collect();
    model.load_named(&named).map_err(|e| match e {
        Error::Param { name, problem } => data_err(path, None, format!("tensor {name}: {problem}")),
        other => data_err(path, None, other.to_string()),
    })?;
    if let Some(bad) = model.params.iter().position(|v| !v.is_finite()) {
        return Err(data_err(path, None, format!("parameter value {bad} is not finite")));
    }
    Ok((model, meta))
}

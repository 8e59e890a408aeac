//! One flat buffer for all parameters (and, with the same table, for their
//! gradients and for each optimizer state), with named views built from a
//! single (name, shape) table. Sizes, views and checkpoint names all come from
//! this table, so they cannot drift apart. Names are PyTorch's `state_dict` names.

use crate::error::{Error, Result};

/// One named tensor inside the flat buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    /// PyTorch state_dict name, e.g. `rnn.weight_ih_l0_reverse`.
    pub name: String,
    /// Shape, row-major.
    pub shape: Vec<usize>,
    /// Offset of the first element in the flat buffer.
    pub offset: usize,
    /// Number of elements (product of the shape).
    pub len: usize,
}

/// The (name, shape) table: the single source of the parameter layout.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParamTable {
    specs: Vec<ParamSpec>,
    total: usize,
}

impl ParamTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a tensor and returns its index in the table.
    pub fn push(&mut self, name: impl Into<String>, shape: &[usize]) -> usize {
        let len = shape.iter().product();
        self.specs.push(ParamSpec { name: name.into(), shape: shape.to_vec(), offset: self.total, len });
        self.total += len;
        self.specs.len() - 1
    }

    /// Total number of scalars.
    pub fn len(&self) -> usize {
        self.total
    }

    /// True when the table holds no scalar.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// All tensors in layout order.
    pub fn specs(&self) -> &[ParamSpec] {
        &self.specs
    }

    /// The spec at `index`.
    pub fn spec(&self, index: usize) -> &ParamSpec {
        &self.specs[index]
    }

    /// Looks a tensor up by name.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.specs.iter().position(|s| s.name == name)
    }

    /// Like `find`, with a typed error naming the missing tensor.
    pub fn index_of(&self, name: &str) -> Result<usize> {
        self.find(name)
            .ok_or_else(|| Error::Param { name: name.to_string(), problem: "no such parameter in this model".into() })
    }

    /// The view of tensor `index` in `buf`.
    pub fn view<'a, F>(&self, buf: &'a [F], index: usize) -> &'a [F] {
        let s = &self.specs[index];
        &buf[s.offset..s.offset + s.len]
    }

    /// The mutable view of tensor `index` in `buf`.
    pub fn view_mut<'a, F>(&self, buf: &'a mut [F], index: usize) -> &'a mut [F] {
        let s = &self.specs[index];
        &mut buf[s.offset..s.offset + s.len]
    }

    /// Disjoint mutable views of several tensors at once (indices must be
    /// strictly increasing).
    pub fn views_mut<'a, F, const N: usize>(&self, buf: &'a mut [F], indices: [usize; N]) -> [&'a mut [F]; N] {
        let mut rest: &'a mut [F] = buf;
        let mut consumed = 0usize;
        let mut out: [&'a mut [F]; N] = std::array::from_fn(|_| <&mut [F]>::default());
        for (slot, &idx) in out.iter_mut().zip(indices.iter()) {
            let s = &self.specs[idx];
            assert!(s.offset >= consumed, "views_mut: indices must be increasing");
            let tmp = std::mem::take(&mut rest);
            let (_, tail) = tmp.split_at_mut(s.offset - consumed);
            let (mine, tail) = tail.split_at_mut(s.len);
            *slot = mine;
            rest = tail;
            consumed = s.offset + s.len;
        }
        out
    }

    /// Copies a named tensor in, checking its shape.
    pub fn set<F: Copy>(&self, buf: &mut [F], name: &str, shape: &[usize], data: &[F]) -> Result<()> {
        let idx = self.index_of(name)?;
        let s = &self.specs[idx];
        if s.shape != shape || data.len() != s.len {
            return Err(Error::Param {
                name: name.into(),
                problem: format!("expected shape {:?}, got {:?} ({} values)", s.shape, shape, data.len()),
            });
        }
        buf[s.offset..s.offset + s.len].copy_from_slice(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_are_disjoint_and_named() {
        let mut t = ParamTable::new();
        let a = t.push("a", &[2, 3]);
        let b = t.push("b", &[4]);
        let c = t.push("c", &[1, 1]);
        assert_eq!(t.len(), 11);
        let mut buf: Vec<f64> = (0..11).map(|x| x as f64).collect();
        let [va, vc] = t.views_mut(&mut buf, [a, c]);
        assert_eq!(va, &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(vc, &[10.0]);
        assert_eq!(t.view(&buf, b), &[6.0, 7.0, 8.0, 9.0]);
        let [x, y] = t.views_mut(&mut buf, [b, c]);
        assert_eq!((x.len(), y.len()), (4, 1));
        assert!(t.set(&mut buf, "b", &[2, 2], &[0.0; 4]).is_err());
        assert!(matches!(t.index_of("zzz"), Err(Error::Param { .. })));
    }
}

//! Growing one axis of a tensor, for parameters and for their optimizer moments.
//!
//! An [`AxisMap`] says where each index of the grown axis comes from: a scaled copy of an
//! old index, or nothing (a fresh entry). A parameter is regathered and scaled. Its moments
//! follow the gradient the grown model has at the growth point. The grown model is symmetric
//! under permuting the copies of one old index, so every copy has the same gradient `g_c`.
//! The chain rule through the expansion gives `g_old = Σ_c s_c · g_c`, hence
//! `g_c = g_old / Σ_c s_c`. First moments are divided by `Σ_c s_c`, second moments by its
//! square, and fresh entries start at zero.
//!
//! For a duplicated producer (`s = 1`, `m` copies) the factor is `1/m`. For a split consumer
//! (`s = 1/m`) it is 1. An unchanged index has factor 1.

use strata_tensor::Result;
use tch::{Kind, Tensor};

/// Where one index of a grown axis comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Origin {
    /// Old index `from`, multiplied by `scale`.
    Copy {
        /// The old index.
        from: usize,
        /// Factor applied to the copied values.
        scale: f64,
    },
    /// A new entry with no counterpart (its values are supplied by the operator).
    Fresh,
}

/// The origins of every index of a grown axis.
#[derive(Clone, Debug, PartialEq)]
pub struct AxisMap {
    /// One origin per new index.
    pub origins: Vec<Origin>,
    /// Length of the old axis.
    pub old_len: usize,
}

impl AxisMap {
    /// `old_len` indices kept as they are, then `fresh` new ones.
    pub fn extend(old_len: usize, fresh: usize) -> Self {
        let origins = (0..old_len)
            .map(|from| Origin::Copy { from, scale: 1.0 })
            .chain(std::iter::repeat_n(Origin::Fresh, fresh))
            .collect();
        Self { origins, old_len }
    }

    /// Copies: new index `i` copies `sources[i]` with scale 1 (a duplicated producer).
    pub fn duplicate(old_len: usize, sources: &[usize]) -> Self {
        let origins = sources
            .iter()
            .map(|&from| Origin::Copy { from, scale: 1.0 })
            .collect();
        Self { origins, old_len }
    }

    /// The same copies, each scaled by one over the number of copies of its source (a split
    /// consumer: the copies add up to the original).
    pub fn split(&self) -> Self {
        let counts = self.copy_counts();
        self.map_scales(|from, scale| scale / counts[from] as f64)
    }

    /// Every copy's scale multiplied by `factor`.
    pub fn scaled(&self, factor: f64) -> Self {
        self.map_scales(|_, scale| scale * factor)
    }

    /// The same origins with each copy's scale replaced by `f(from, scale)`.
    fn map_scales(&self, f: impl Fn(usize, f64) -> f64) -> Self {
        let origins = self
            .origins
            .iter()
            .map(|o| match *o {
                Origin::Copy { from, scale } => Origin::Copy {
                    from,
                    scale: f(from, scale),
                },
                Origin::Fresh => Origin::Fresh,
            })
            .collect();
        Self {
            origins,
            old_len: self.old_len,
        }
    }

    /// New length of the axis.
    pub fn len(&self) -> usize {
        self.origins.len()
    }

    /// True when the axis has no entries.
    pub fn is_empty(&self) -> bool {
        self.origins.is_empty()
    }

    /// How many copies each old index has.
    pub fn copy_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.old_len];
        for o in &self.origins {
            if let Origin::Copy { from, .. } = o {
                counts[*from] += 1;
            }
        }
        counts
    }

    /// `Σ_c s_c` over the copies of each old index.
    fn scale_sums(&self) -> Vec<f64> {
        let mut sums = vec![0.0; self.old_len];
        for o in &self.origins {
            if let Origin::Copy { from, scale } = o {
                sums[*from] += scale;
            }
        }
        sums
    }

    /// Regathers `t` along `axis` with per-index `factors` of the copies; fresh entries
    /// take the matching slice of `fresh` (same shape as the result) or zeros.
    fn gather(
        &self,
        t: &Tensor,
        axis: i64,
        factors: &[f64],
        fresh: Option<&Tensor>,
    ) -> Result<Tensor> {
        let index: Vec<i64> = self
            .origins
            .iter()
            .map(|o| match o {
                Origin::Copy { from, .. } => *from as i64,
                Origin::Fresh => 0,
            })
            .collect();
        let index = Tensor::f_from_slice(&index)?.f_to_device(t.device())?;
        let gathered = t.f_index_select(axis, &index)?;
        let mut shape = vec![1i64; t.dim()];
        let axis_u = if axis < 0 {
            t.dim() as i64 + axis
        } else {
            axis
        } as usize;
        shape[axis_u] = factors.len() as i64;
        let factors = Tensor::f_from_slice(factors)?
            .f_to_kind(t.kind())?
            .f_to_device(t.device())?
            .f_view(shape.as_slice())?;
        let out = gathered.f_mul(&factors)?;
        let Some(fresh) = fresh else {
            return Ok(out);
        };
        let is_fresh: Vec<f64> = self
            .origins
            .iter()
            .map(|o| f64::from(u8::from(matches!(o, Origin::Fresh))))
            .collect();
        let mask = Tensor::f_from_slice(&is_fresh)?
            .f_to_kind(t.kind())?
            .f_to_device(t.device())?
            .f_view(shape.as_slice())?;
        Ok(out.f_add(&fresh.f_to_kind(t.kind())?.f_mul(&mask)?)?)
    }

    /// The grown parameter: scaled copies, and `fresh` (or zeros) at new indices.
    pub fn param(&self, t: &Tensor, axis: i64, fresh: Option<&Tensor>) -> Result<Tensor> {
        let factors: Vec<f64> = self
            .origins
            .iter()
            .map(|o| match o {
                Origin::Copy { scale, .. } => *scale,
                Origin::Fresh => 0.0,
            })
            .collect();
        self.gather(t, axis, &factors, fresh)
    }

    /// The grown moment (`power` 1 for first moments, 2 for second): the old moment over
    /// `(Σ_c s_c)^power` at copies, zero at new indices (module docs).
    pub fn moment(&self, t: &Tensor, axis: i64, power: i32) -> Result<Tensor> {
        let sums = self.scale_sums();
        let factors: Vec<f64> = self
            .origins
            .iter()
            .map(|o| match o {
                Origin::Copy { from, .. } => 1.0 / sums[*from].abs().max(1e-30).powi(power),
                Origin::Fresh => 0.0,
            })
            .collect();
        self.gather(t, axis, &factors, None)
    }

    /// Noise along `axis` for a tensor of `shape` that sums to zero over each group of copies
    /// of one old index (and is zero at fresh and uncopied indices): added to split weights,
    /// it breaks the copies' symmetry and keeps their sum.
    pub fn zero_sum_noise(&self, shape: &[i64], axis: usize, std: f64) -> Result<Tensor> {
        let counts = self.copy_counts();
        let noise = Tensor::f_randn(shape, (Kind::Double, tch::Device::Cpu))?.f_mul_scalar(std)?;
        // Group means over the copies: scatter-add into old indices, divide, gather back.
        let index: Vec<i64> = self
            .origins
            .iter()
            .map(|o| match o {
                Origin::Copy { from, .. } => *from as i64,
                Origin::Fresh => self.old_len as i64,
            })
            .collect();
        let keep: Vec<f64> = self
            .origins
            .iter()
            .map(|o| match o {
                Origin::Copy { from, .. } if counts[*from] > 1 => 1.0,
                _ => 0.0,
            })
            .collect();
        let mut view = vec![1i64; shape.len()];
        view[axis] = shape[axis];
        let keep = Tensor::f_from_slice(&keep)?.f_view(view.as_slice())?;
        let noise = noise.f_mul(&keep)?;
        let mut group_shape = shape.to_vec();
        group_shape[axis] = self.old_len as i64 + 1;
        let index_t = Tensor::f_from_slice(&index)?
            .f_view(view.as_slice())?
            .f_expand(shape, false)?
            .f_contiguous()?;
        let sums = Tensor::f_zeros(group_shape.as_slice(), (Kind::Double, tch::Device::Cpu))?
            .f_scatter_add(axis as i64, &index_t, &noise)?;
        let mut count_f: Vec<f64> = counts.iter().map(|&c| c.max(1) as f64).collect();
        count_f.push(1.0);
        let mut count_view = vec![1i64; shape.len()];
        count_view[axis] = count_f.len() as i64;
        let means = sums.f_div(&Tensor::f_from_slice(&count_f)?.f_view(count_view.as_slice())?)?;
        let back = means.f_gather(axis as i64, &index_t, false)?;
        Ok(noise.f_sub(&back.f_mul(&keep)?)?)
    }
}

/// Random old indices for `extra` new units out of `old` (seeded by the caller).
pub fn random_sources(old: usize, extra: usize) -> Result<Vec<usize>> {
    if extra == 0 || old == 0 {
        return Ok((0..old).collect());
    }
    let picks = Tensor::f_randint(old as i64, [extra as i64], (Kind::Int64, tch::Device::Cpu))?;
    let picks = Vec::<i64>::try_from(&picks)?;
    Ok((0..old)
        .chain(picks.into_iter().map(|p| p as usize))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_copies_add_up_and_moments_follow_the_gradients() {
        let map = AxisMap::duplicate(3, &[0, 1, 2, 1, 1]);
        assert_eq!(map.copy_counts(), vec![1, 3, 1]);
        let split = map.split();
        let w = Tensor::from_slice(&[1.0f64, 2.0, 3.0]).view([1, 3]);
        let grown = split.param(&w, 1, None).unwrap();
        let values: Vec<f64> = Vec::try_from(grown.view([-1])).unwrap();
        let expected = [1.0, 2.0 / 3.0, 3.0, 2.0 / 3.0, 2.0 / 3.0];
        for (a, b) in values.iter().zip(expected) {
            assert!((a - b).abs() < 1e-12);
        }
        // Split consumers keep the gradient; duplicated producers share it.
        let m = Tensor::from_slice(&[0.3f64, 0.6, 0.9]);
        let m_split: Vec<f64> = Vec::try_from(split.moment(&m, 0, 1).unwrap()).unwrap();
        assert_eq!(m_split, vec![0.3, 0.6, 0.9, 0.6, 0.6]);
        let v_dup: Vec<f64> = Vec::try_from(map.moment(&m, 0, 2).unwrap()).unwrap();
        assert!((v_dup[1] - 0.6 / 9.0).abs() < 1e-12);
        assert!((v_dup[0] - 0.3).abs() < 1e-12);
    }

    #[test]
    fn fresh_entries_take_supplied_values_and_zero_moments() {
        let map = AxisMap::extend(2, 2);
        let t = Tensor::from_slice(&[5.0f64, 6.0]);
        let fresh = Tensor::from_slice(&[9.0f64, 9.0, 7.0, 8.0]);
        let grown: Vec<f64> = Vec::try_from(map.param(&t, 0, Some(&fresh)).unwrap()).unwrap();
        assert_eq!(grown, vec![5.0, 6.0, 7.0, 8.0]);
        let m: Vec<f64> = Vec::try_from(map.moment(&t, 0, 1).unwrap()).unwrap();
        assert_eq!(m, vec![5.0, 6.0, 0.0, 0.0]);
    }

    #[test]
    fn noise_sums_to_zero_over_each_group_of_copies() {
        let map = AxisMap::duplicate(3, &[0, 1, 2, 1, 0, 1]);
        let noise = map.zero_sum_noise(&[4, 6], 1, 1.0).unwrap();
        let rows: Vec<Vec<f64>> = (0..4)
            .map(|r| Vec::try_from(noise.select(0, r)).unwrap())
            .collect();
        for row in rows {
            let group1 = row[1] + row[3] + row[5];
            let group0 = row[0] + row[4];
            assert!(group1.abs() < 1e-12 && group0.abs() < 1e-12);
            assert_eq!(row[2], 0.0, "an uncopied unit gets no noise");
            assert!(row[1].abs() > 0.0);
        }
    }
}

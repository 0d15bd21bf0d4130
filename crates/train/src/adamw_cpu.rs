//! Fused AdamW and gradient-norm kernels for contiguous f32 CPU tensors: one pass over the
//! parameter, its gradient and both moments, chunks spread over rayon's threads. The optimizer
//! falls back to libtorch ops for anything else (CUDA, f64, strided).

use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

/// Elements per parallel chunk: large enough to amortise scheduling, small enough to balance.
const CHUNK: usize = 16 * 1024;

/// The scalars of one AdamW step, precomputed once per step.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StepScalars {
    /// Multiplier applied to the parameter before the update (`1 - lr·wd`, or 1).
    pub decay_factor: f32,
    /// `1 - β1`.
    pub one_minus_beta1: f32,
    /// β2.
    pub beta2: f32,
    /// `1 - β2`.
    pub one_minus_beta2: f32,
    /// `sqrt(1 - β2^t)`.
    pub bias2_sqrt: f32,
    /// ε.
    pub eps: f32,
    /// `lr / (1 - β1^t)`.
    pub step_size: f32,
}

/// True when every tensor is a defined, contiguous f32 CPU tensor.
pub(crate) fn eligible(tensors: &[&Tensor]) -> bool {
    tensors.iter().all(|t| {
        t.defined() && t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous()
    })
}

/// A raw f32 buffer shared by the chunk tasks of one call; tasks touch disjoint ranges.
#[derive(Clone, Copy)]
struct Buffer(*mut f32);

// SAFETY: every task of a call writes a disjoint element range, and the tensors behind the
// buffers are held exclusively by the caller for the duration of the call.
unsafe impl Send for Buffer {}
// SAFETY: as above.
unsafe impl Sync for Buffer {}

impl Buffer {
    /// The buffer of an eligible tensor.
    fn of(t: &Tensor) -> Self {
        Self(t.data_ptr() as *mut f32)
    }

    /// Elements `range` as a mutable slice.
    ///
    /// # Safety
    /// The range must lie inside the tensor and no other live slice may overlap it.
    unsafe fn range(self, range: std::ops::Range<usize>) -> &'static mut [f32] {
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(range.start), range.len()) }
    }
}

/// Splits tensors of the given lengths into `(tensor index, element range)` tasks of at
/// most [`CHUNK`] elements, so that one parallel call covers every tensor.
fn tasks(lengths: impl Iterator<Item = usize>) -> Vec<(usize, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    for (i, len) in lengths.enumerate() {
        let mut start = 0;
        while start < len {
            let end = (start + CHUNK).min(len);
            out.push((i, start..end));
            start = end;
        }
    }
    out
}

/// One fused AdamW update per `(param, grad, exp_avg, exp_avg_sq, scalars)` group, in place,
/// in a single parallel pass. Every tensor must be [`eligible`], each group's four tensors
/// the same size and distinct storages.
pub(crate) fn adamw_update(groups: &[(&Tensor, &Tensor, &Tensor, &Tensor, StepScalars)]) {
    let buffers: Vec<_> = groups
        .iter()
        .map(|(p, g, m, v, s)| {
            (
                Buffer::of(p),
                Buffer::of(g),
                Buffer::of(m),
                Buffer::of(v),
                *s,
            )
        })
        .collect();
    tasks(groups.iter().map(|group| group.0.numel()))
        .into_par_iter()
        .for_each(|(i, range)| {
            let (p, g, m, v, s) = buffers[i];
            // SAFETY: tasks cover disjoint ranges of each tensor, within bounds.
            let (p, g, m, v) = unsafe {
                (
                    p.range(range.clone()),
                    g.range(range.clone()),
                    m.range(range.clone()),
                    v.range(range),
                )
            };
            for i in 0..p.len() {
                let gi = g[i];
                let mi = m[i] + s.one_minus_beta1 * (gi - m[i]);
                let vi = v[i] * s.beta2 + s.one_minus_beta2 * gi * gi;
                let denom = vi.sqrt() / s.bias2_sqrt + s.eps;
                p[i] = p[i] * s.decay_factor - s.step_size * (mi / denom);
                m[i] = mi;
                v[i] = vi;
            }
        });
}

/// Sum of squares of every element of the [`eligible`] `tensors`, accumulated in f64.
pub(crate) fn sum_squares(tensors: &[Tensor]) -> f64 {
    let buffers: Vec<_> = tensors.iter().map(Buffer::of).collect();
    let mut partial: Vec<(usize, usize, f64)> = tasks(tensors.iter().map(Tensor::numel))
        .into_par_iter()
        .map(|(i, range)| {
            let start = range.start;
            // SAFETY: read-only, in bounds; nothing writes these tensors meanwhile.
            let x = unsafe { buffers[i].range(range) };
            (i, start, chunk_sum_squares(x))
        })
        .collect();
    // A fixed summation order, whatever the scheduling.
    partial.sort_by_key(|&(i, start, _)| (i, start));
    partial.iter().map(|&(_, _, sum)| sum).sum()
}

/// Sum of squares of one chunk: eight f32 lanes (vectorisable), combined in f64.
fn chunk_sum_squares(x: &[f32]) -> f64 {
    let mut lanes = [0f32; 8];
    let mut blocks = x.chunks_exact(8);
    for block in &mut blocks {
        for (lane, &a) in lanes.iter_mut().zip(block) {
            *lane += a * a;
        }
    }
    let tail: f64 = blocks.remainder().iter().map(|&a| f64::from(a * a)).sum();
    lanes.iter().map(|&l| f64::from(l)).sum::<f64>() + tail
}

/// Multiplies every element of the [`eligible`] `tensors` by `factor` in place.
pub(crate) fn scale(tensors: &[Tensor], factor: f32) {
    let buffers: Vec<_> = tensors.iter().map(Buffer::of).collect();
    tasks(tensors.iter().map(Tensor::numel))
        .into_par_iter()
        .for_each(|(i, range)| {
            // SAFETY: disjoint in-bounds ranges of tensors the caller holds exclusively.
            let x = unsafe { buffers[i].range(range) };
            x.iter_mut().for_each(|a| *a *= factor);
        });
}

//! The CPU no-grad weighted sum: rayon over chunks of the output, each chunk reading every
//! selected input once (any strides) and writing the output once.

use crate::Selection;
use half::bf16;
use rayon::prelude::*;
use strata_tensor::{Error, Result};
use tch::{Device, Kind, Tensor};

/// Output elements one task accumulates at a time (fits in L1 with its accumulator).
const CHUNK: usize = 16384;

/// An element type the kernel reads and writes, with the type it accumulates in.
trait Element: Copy + Send + Sync + 'static {
    /// The accumulation type (f32, or f64 for f64 inputs).
    type Acc: Copy + Default + Send + Sync + std::ops::Mul<Output = Self::Acc> + std::ops::AddAssign;
    /// Widens to the accumulation type.
    fn widen(self) -> Self::Acc;
    /// Rounds back from the accumulation type.
    fn narrow(acc: Self::Acc) -> Self;
    /// A weight in the accumulation type.
    fn weight(w: f64) -> Self::Acc;
}

impl Element for f32 {
    type Acc = f32;
    fn widen(self) -> f32 {
        self
    }
    fn narrow(acc: f32) -> f32 {
        acc
    }
    fn weight(w: f64) -> f32 {
        w as f32
    }
}

impl Element for f64 {
    type Acc = f64;
    fn widen(self) -> f64 {
        self
    }
    fn narrow(acc: f64) -> f64 {
        acc
    }
    fn weight(w: f64) -> f64 {
        w
    }
}

impl Element for bf16 {
    type Acc = f32;
    fn widen(self) -> f32 {
        self.to_f32()
    }
    fn narrow(acc: f32) -> bf16 {
        bf16::from_f32(acc)
    }
    fn weight(w: f64) -> f32 {
        w as f32
    }
}

/// Where one layer's elements are: rows of a contiguous-or-strided inner run.
struct Layout {
    /// Sizes and strides (in elements) of the dimensions that enumerate rows, outermost first.
    outer: Vec<(usize, isize)>,
    /// Elements in one row.
    inner_len: usize,
    /// Stride between consecutive elements of a row.
    inner_stride: isize,
}

impl Layout {
    /// Coalesces a layer's dimensions (size-1 dimensions dropped, mergeable ones merged).
    fn new(sizes: &[i64], strides: &[i64]) -> Self {
        let mut dims: Vec<(usize, isize)> = Vec::new();
        for (&size, &stride) in sizes.iter().zip(strides) {
            if size == 1 {
                continue;
            }
            let (size, stride) = (size as usize, stride as isize);
            match dims.last_mut() {
                Some(last) if last.1 == stride * size as isize => {
                    *last = (last.0 * size, stride);
                }
                _ => dims.push((size, stride)),
            }
        }
        let (inner_len, inner_stride) = dims.pop().unwrap_or((1, 1));
        Self {
            outer: dims,
            inner_len,
            inner_stride,
        }
    }

    /// Offset in elements of the first element of row `row`.
    fn row_offset(&self, mut row: usize) -> isize {
        let mut offset = 0;
        for &(size, stride) in self.outer.iter().rev() {
            offset += (row % size) as isize * stride;
            row /= size;
        }
        offset
    }
}

/// Raw addresses of the selected layers and their weights, shareable across rayon's threads.
struct Inputs<T: Element> {
    bases: Vec<*const T>,
    weights: Vec<T::Acc>,
}

// SAFETY: the pointers are only read, and the caller keeps the stack alive and unmodified
// for the duration of the call.
unsafe impl<T: Element> Sync for Inputs<T> {}

/// Writes `Σ_i w_i · stack[sel_i]` into `out` (contiguous, one layer's shape and dtype).
pub(crate) fn weighted_sum_into(
    out: &mut Tensor,
    stack: &Tensor,
    weights: &[f64],
    selection: &Selection,
) -> Result<()> {
    check_output(out, stack)?;
    match stack.kind() {
        Kind::Float => run::<f32>(out, stack, weights, selection),
        Kind::Double => run::<f64>(out, stack, weights, selection),
        Kind::BFloat16 => run::<bf16>(out, stack, weights, selection),
        other => Err(Error::Invalid(format!(
            "cpu weighted sum: expected f32, bf16 or f64 layers, got {other:?}"
        ))),
    }
}

/// Refuses CPU-foreign tensors and an output that overlaps the stack's memory (shape, dtype
/// and contiguity are checked by the caller).
fn check_output(out: &Tensor, stack: &Tensor) -> Result<()> {
    if out.device() != Device::Cpu || stack.device() != Device::Cpu {
        return Err(Error::Device(
            "the cpu weighted sum needs CPU tensors".to_owned(),
        ));
    }
    let elt = stack.kind().elt_size_in_bytes();
    let out_lo = out.data_ptr() as usize;
    let out_hi = out_lo + out.numel() * elt;
    let stack_lo = stack.data_ptr() as usize;
    let reach: i64 = stack
        .size()
        .iter()
        .zip(stack.stride())
        .map(|(size, stride)| (size - 1).max(0) * stride)
        .sum();
    let stack_hi = stack_lo + (reach as usize + 1) * elt;
    if out.numel() > 0 && stack.numel() > 0 && out_lo < stack_hi && stack_lo < out_hi {
        return Err(Error::Invalid(
            "cpu weighted sum: the output overlaps the stacked inputs".to_owned(),
        ));
    }
    Ok(())
}

/// The kernel for one element type.
fn run<T: Element>(
    out: &mut Tensor,
    stack: &Tensor,
    weights: &[f64],
    selection: &Selection,
) -> Result<()> {
    let numel = out.numel();
    if numel == 0 {
        return Ok(());
    }
    let sizes = stack.size();
    let strides = stack.stride();
    let layout = Layout::new(&sizes[1..], &strides[1..]);
    let base = stack.data_ptr() as *const T;
    let inputs = Inputs::<T> {
        // SAFETY: every selected index is inside the stack (checked by the caller), so each
        // offset stays inside its allocation.
        bases: selection
            .indices()
            .map(|j| unsafe { base.offset(j as isize * strides[0] as isize) })
            .collect(),
        weights: weights.iter().map(|&w| T::weight(w)).collect(),
    };
    // SAFETY: `out` is a contiguous CPU tensor of `numel` elements of type T that does not
    // overlap the inputs (checked), and nothing else touches it during the call.
    let out_slice = unsafe { std::slice::from_raw_parts_mut(out.data_ptr() as *mut T, numel) };
    out_slice
        .par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(chunk, dst)| accumulate_chunk(dst, chunk * CHUNK, &inputs, &layout));
    Ok(())
}

/// Output elements accumulated in registers across all layers at a time.
const LANES: usize = 32;

/// Computes output elements `first .. first + dst.len()` into `dst`.
fn accumulate_chunk<T: Element>(dst: &mut [T], first: usize, inputs: &Inputs<T>, layout: &Layout) {
    let mut done = 0;
    while done < dst.len() {
        let index = first + done;
        let (row, col) = (index / layout.inner_len, index % layout.inner_len);
        let len = (layout.inner_len - col).min(dst.len() - done);
        let offset = layout.row_offset(row) + col as isize * layout.inner_stride;
        let out = &mut dst[done..done + len];
        if layout.inner_stride == 1 {
            // SAFETY: row `row`, columns `col .. col + len` lie inside each selected layer.
            unsafe { unit_stride_run(out, offset, inputs) };
        } else {
            for (k, d) in out.iter_mut().enumerate() {
                let at = offset + k as isize * layout.inner_stride;
                let mut acc = T::Acc::default();
                for (&base, &w) in inputs.bases.iter().zip(&inputs.weights) {
                    // SAFETY: element `col + k` of the row, inside the layer.
                    acc += w * unsafe { *base.offset(at) }.widen();
                }
                *d = T::narrow(acc);
            }
        }
        done += len;
    }
}

/// One contiguous run: every `LANES` outputs are summed over all layers in registers, so each
/// input is streamed once and the output written once.
///
/// # Safety
/// `offset .. offset + out.len()` must lie inside every selected layer.
unsafe fn unit_stride_run<T: Element>(out: &mut [T], offset: isize, inputs: &Inputs<T>) {
    let mut blocks = out.chunks_exact_mut(LANES);
    let mut start = offset;
    for block in &mut blocks {
        let mut acc = [T::Acc::default(); LANES];
        for (&base, &w) in inputs.bases.iter().zip(&inputs.weights) {
            // SAFETY: the caller guarantees the run lies inside the layer.
            let src = unsafe { std::slice::from_raw_parts(base.offset(start), LANES) };
            for (a, x) in acc.iter_mut().zip(src) {
                *a += w * x.widen();
            }
        }
        for (d, a) in block.iter_mut().zip(acc) {
            *d = T::narrow(a);
        }
        start += LANES as isize;
    }
    let tail = blocks.into_remainder();
    let mut acc = [T::Acc::default(); LANES];
    for (&base, &w) in inputs.bases.iter().zip(&inputs.weights) {
        // SAFETY: as above, for the last `tail.len()` elements.
        let src = unsafe { std::slice::from_raw_parts(base.offset(start), tail.len()) };
        for (a, x) in acc.iter_mut().zip(src) {
            *a += w * x.widen();
        }
    }
    for (d, a) in tail.iter_mut().zip(acc) {
        *d = T::narrow(a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_coalesce_contiguous_dims_and_keep_strided_ones() {
        let l = Layout::new(&[2, 3, 4], &[12, 4, 1]);
        assert_eq!((l.outer.len(), l.inner_len, l.inner_stride), (0, 24, 1));
        let l = Layout::new(&[2, 3, 4], &[24, 8, 2]);
        assert_eq!((l.outer.len(), l.inner_len, l.inner_stride), (0, 24, 2));
        let l = Layout::new(&[2, 3, 4], &[24, 8, 1]);
        assert_eq!((l.inner_len, l.inner_stride), (4, 1));
        assert_eq!(l.outer, vec![(6, 8)]);
        assert_eq!(l.row_offset(5), 40);
        let l = Layout::new(&[2, 1, 5], &[10, 99, 1]);
        assert_eq!(l.outer, vec![(2, 10)]);
        assert_eq!(l.row_offset(1), 10);
        let l = Layout::new(&[1, 1], &[1, 1]);
        assert_eq!((l.inner_len, l.inner_stride), (1, 1));
    }
}

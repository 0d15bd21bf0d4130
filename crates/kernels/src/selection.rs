//! Which stacked layer outputs take part in a weighted sum.

use strata_tensor::{Error, Result};

/// An arithmetic progression of layer indices into the stack: `start, start + step, ...`
/// (`count` of them). Selecting is a strided view, never a copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selection {
    /// First selected layer index.
    pub start: usize,
    /// Distance between selected layers (DenseFormer's dilation k).
    pub step: usize,
    /// Number of selected layers.
    pub count: usize,
}

impl Selection {
    /// Every one of the first `n` layers.
    pub fn all(n: usize) -> Self {
        Self {
            start: 0,
            step: 1,
            count: n,
        }
    }

    /// DenseFormer's pattern for the DWA after the layer stored at index `current`:
    /// the layers `j <= current` with `j ≡ current (mod dilation)`.
    pub fn dilated(current: usize, dilation: usize) -> Result<Self> {
        if dilation == 0 {
            return Err(Error::Invalid("dilation must be at least 1".to_owned()));
        }
        Ok(Self {
            start: current % dilation,
            step: dilation,
            count: current / dilation + 1,
        })
    }

    /// The selected indices in increasing order.
    pub fn indices(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.count).map(move |i| self.start + i * self.step)
    }

    /// Index of the last selected layer.
    pub fn last(&self) -> Option<usize> {
        self.count
            .checked_sub(1)
            .map(|i| self.start + i * self.step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dilated_selection_matches_a_filter_over_all_indices() {
        for dilation in 1..5 {
            for current in 0..12 {
                let sel = Selection::dilated(current, dilation).unwrap();
                let want: Vec<usize> = (0..=current)
                    .filter(|j| (current - j) % dilation == 0)
                    .collect();
                assert_eq!(sel.indices().collect::<Vec<_>>(), want);
                assert_eq!(sel.last(), Some(current));
            }
        }
        assert!(Selection::dilated(3, 0).is_err());
    }
}

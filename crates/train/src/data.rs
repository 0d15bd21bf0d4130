//! Corpora on disk, train/val token splits and reproducible random batches.
//!
//! Batches are drawn from an RNG seeded only by `(seed, step)`, so a run resumed at step
//! `s` sees exactly the batch an uninterrupted run saw at step `s`.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;
use strata_tensor::{Error, Result};
use tch::{Device, Kind, Tensor};

/// Salt mixed into the seed of [`fixed_batches`] so evaluation batches differ from the
/// training batches drawn with the same seed.
const EVAL_SALT: u64 = 0x5EED_E7A1_0000_0001;

/// A text corpus and the files it was read from.
#[derive(Clone, Debug)]
pub struct Corpus {
    /// The whole corpus; the files of a folder are joined with `"\n"`.
    pub text: String,
    /// The files read, in the order their text appears.
    pub sources: Vec<PathBuf>,
}

impl Corpus {
    /// Reads a UTF-8 file, or every non-hidden regular file under a folder in path order.
    pub fn load(path: &Path) -> Result<Corpus> {
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            ErrorKind::NotFound => Error::data(
                path,
                "no such file or folder; expected a UTF-8 text file or a folder of them",
            ),
            _ => Error::io(path)(e),
        })?;
        let sources = if meta.is_dir() {
            let mut files = Vec::new();
            collect_files(path, &mut files)?;
            files.sort();
            if files.is_empty() {
                return Err(Error::data(
                    path,
                    "folder holds no corpus files (hidden files are skipped); expected at least one UTF-8 text file",
                ));
            }
            files
        } else {
            vec![path.to_path_buf()]
        };
        let texts = sources
            .iter()
            .map(|file| read_utf8(file))
            .collect::<Result<Vec<_>>>()?;
        if texts.iter().all(String::is_empty) {
            return Err(Error::data(
                path,
                "corpus is empty; expected UTF-8 text of at least one character",
            ));
        }
        let text = texts.join("\n");
        tracing::info!(
            path = %path.display(),
            files = sources.len(),
            bytes = text.len(),
            "loaded corpus"
        );
        Ok(Corpus { text, sources })
    }
}

/// Appends the non-hidden regular files under `dir` (recursively) to `files`.
fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            tracing::debug!(path = %path.display(), "skipping hidden corpus entry");
            continue;
        }
        let file_type = entry.file_type().map_err(Error::io(&path))?;
        if file_type.is_dir() {
            collect_files(&path, files)?;
        } else if file_type.is_file()
            || (file_type.is_symlink() && std::fs::metadata(&path).is_ok_and(|m| m.is_file()))
        {
            files.push(path);
        } else {
            tracing::debug!(path = %path.display(), "skipping non-regular corpus entry");
        }
    }
    Ok(())
}

/// Reads `file` as UTF-8, naming the file and the first bad byte otherwise.
fn read_utf8(file: &Path) -> Result<String> {
    let bytes = std::fs::read(file).map_err(Error::io(file))?;
    String::from_utf8(bytes).map_err(|e| {
        Error::data(
            file,
            format!(
                "not valid UTF-8 (first invalid byte at offset {}); expected UTF-8 text, \
                 convert it first, e.g. `iconv -f latin1 -t utf-8`",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// Which split of the tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// The first `1 - val_fraction` of the tokens.
    Train,
    /// The last `val_fraction` of the tokens.
    Val,
}

impl Split {
    /// The split's lowercase name (`train` or `val`).
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The tokens of a corpus split nanoGPT-style into train (first part) and val (last part).
#[derive(Debug)]
pub struct TokenSplits {
    /// Training tokens, a 1-D Int64 CPU tensor.
    pub train: Tensor,
    /// Validation tokens, a 1-D Int64 CPU tensor.
    pub val: Tensor,
}

impl TokenSplits {
    /// Splits `tokens` so the last `val_fraction` is validation; each split needs at least
    /// `block_size + 1` tokens. `source` names the corpus in errors, which name the config
    /// field (`data.val_fraction`, `model.block_size`) that conflicts with it.
    pub fn new(
        tokens: &[u32],
        val_fraction: f64,
        block_size: usize,
        source: &Path,
    ) -> Result<Self> {
        if !(val_fraction > 0.0 && val_fraction < 1.0) {
            return Err(Error::data(
                source,
                format!(
                    "data.val_fraction = {val_fraction} is out of range; expected a fraction \
                     strictly between 0 and 1"
                ),
            ));
        }
        if block_size == 0 {
            return Err(Error::data(
                source,
                "model.block_size = 0 is out of range; expected at least 1 token",
            ));
        }
        let n = tokens.len();
        let n_train = ((n as f64) * (1.0 - val_fraction)) as usize;
        let (train, val) = tokens.split_at(n_train.min(n));
        for (split, part) in [(Split::Train, train), (Split::Val, val)] {
            if part.len() <= block_size {
                return Err(Error::data(
                    source,
                    format!(
                        "model.block_size = {block_size} does not fit this corpus: a block needs \
                         block_size + 1 = {} tokens, but the {split} split has {} tokens (of {n}, \
                         data.val_fraction = {val_fraction}); expected model.block_size of at most \
                         {}, or a longer corpus",
                        block_size + 1,
                        part.len(),
                        part.len().saturating_sub(1)
                    ),
                ));
            }
        }
        let to_tensor = |part: &[u32]| {
            let ids: Vec<i64> = part.iter().map(|&t| i64::from(t)).collect();
            Tensor::f_from_slice(&ids)
        };
        tracing::info!(
            train = train.len(),
            val = val.len(),
            "split tokens into train and val"
        );
        Ok(TokenSplits {
            train: to_tensor(train)?,
            val: to_tensor(val)?,
        })
    }

    /// The tokens of `split`.
    pub fn get(&self, split: Split) -> &Tensor {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
        }
    }
}

/// SplitMix64's output function: a bijective 64-bit mix.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The RNG for batch `step` of a run seeded with `seed`.
fn batch_rng(seed: u64, step: u64) -> Pcg64 {
    Pcg64::seed_from_u64(splitmix64(splitmix64(seed) ^ step))
}

/// The window offsets of batch `step` in a split of `len` tokens: `batch_size` offsets
/// uniform in `[0, len - block_size - 1]` from an RNG seeded only by `(seed, step)` (what
/// [`random_batch`] reads; empty when the split cannot hold one window).
pub fn batch_offsets(
    len: usize,
    batch_size: usize,
    block_size: usize,
    seed: u64,
    step: u64,
) -> Vec<i64> {
    let Some(max_offset) = len.checked_sub(block_size + 1) else {
        return Vec::new();
    };
    let mut rng = batch_rng(seed, step);
    (0..batch_size)
        .map(|_| rng.random_range(0..=max_offset as i64))
        .collect()
}

/// Draws `batch_size` windows of `block_size + 1` tokens at offsets uniform in
/// `[0, len - block_size - 1]` from an RNG seeded only by `(seed, step)`; returns inputs `x`
/// and targets `y` (x shifted by one), both `[batch_size, block_size]` Int64 on `device`.
///
/// Fails (never panics) when `tokens` is not 1-D, holds fewer than `block_size + 1` tokens
/// ([`TokenSplits::new`] guarantees both) or libtorch cannot allocate the batch.
pub fn random_batch(
    tokens: &Tensor,
    batch_size: usize,
    block_size: usize,
    seed: u64,
    step: u64,
    device: Device,
) -> Result<(Tensor, Tensor)> {
    let len = usize::try_from(tokens.size1()?).unwrap_or(0);
    if len <= block_size {
        return Err(Error::Invalid(format!(
            "random_batch: {len} tokens cannot hold one block of model.block_size = {block_size} \
             + 1 tokens"
        )));
    }
    let offsets = batch_offsets(len, batch_size, block_size, seed, step);
    let src = tokens.device();
    let t = block_size as i64;
    let index = Tensor::f_from_slice(&offsets)?
        .f_to_device(src)?
        .f_view([-1, 1])?
        .f_add(&Tensor::f_arange(t + 1, (Kind::Int64, src))?.f_view([1, -1])?)?;
    let windows = tokens
        .f_take(&index)?
        .f_to_kind(Kind::Int64)?
        .f_to_device(device)?;
    let x = windows.f_narrow(1, 0, t)?.f_contiguous()?;
    let y = windows.f_narrow(1, 1, t)?.f_contiguous()?;
    Ok((x, y))
}

/// `count` evaluation batches drawn once from `seed` (salted so they differ from the
/// training batches of the same seed); the same arguments give the same batches.
pub fn fixed_batches(
    tokens: &Tensor,
    count: usize,
    batch_size: usize,
    block_size: usize,
    seed: u64,
    device: Device,
) -> Result<Vec<(Tensor, Tensor)>> {
    let eval_seed = splitmix64(seed ^ EVAL_SALT);
    (0..count as u64)
        .map(|i| random_batch(tokens, batch_size, block_size, eval_seed, i, device))
        .collect()
}

//! Integration tests for corpus loading, train/val splits and batch sampling.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use strata_train::data::{Corpus, Split, TokenSplits, fixed_batches, random_batch};
use tch::{Device, Kind, Tensor};

fn write(path: &Path, content: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn to_vec(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t.flatten(0, -1)).unwrap()
}

/// `n` distinct token ids in scrambled order, so each window's position is unique.
fn distinct_tokens(n: usize) -> Tensor {
    let ids: Vec<i64> = (0..n as i64).map(|i| (i * 7919) % n as i64).collect();
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        n,
        "not a permutation"
    );
    Tensor::from_slice(&ids)
}

#[test]
fn load_folder_reads_nested_files_in_sorted_order_and_skips_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(&root.join("b.txt"), b"B");
    write(&root.join("a/z.txt"), b"AZ");
    write(&root.join("a/y.txt"), b"AY");
    write(&root.join("c.md"), "C é".as_bytes());
    write(&root.join(".hidden.txt"), b"H");
    write(&root.join(".git/config"), b"G");
    write(&root.join("a/.cache/x.txt"), b"X");

    let corpus = Corpus::load(root).unwrap();
    assert_eq!(corpus.text, "AY\nAZ\nB\nC é");
    let rel: Vec<_> = corpus
        .sources
        .iter()
        .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(rel, ["a/y.txt", "a/z.txt", "b.txt", "c.md"]);
}

#[test]
fn load_single_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("input.txt");
    write(&path, b"To be, or not to be\n");
    let corpus = Corpus::load(&path).unwrap();
    assert_eq!(corpus.text, "To be, or not to be\n");
    assert_eq!(corpus.sources, vec![path]);
}

#[test]
fn non_utf8_file_error_names_that_file() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("good.txt"), b"fine");
    write(&dir.path().join("sub/latin1.txt"), b"caf\xe9 au lait");
    let err = Corpus::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("sub/latin1.txt"), "{err}");
    assert!(err.contains("UTF-8"), "{err}");
    assert!(err.contains("offset 3"), "{err}");
    assert!(err.contains("convert"), "{err}");
}

#[test]
fn missing_path_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.txt");
    let err = Corpus::load(&path).unwrap_err().to_string();
    assert!(err.contains("nope.txt"), "{err}");
    assert!(err.contains("no such file or folder"), "{err}");
}

#[test]
fn empty_corpus_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let empty_file = dir.path().join("empty.txt");
    write(&empty_file, b"");
    let err = Corpus::load(&empty_file).unwrap_err().to_string();
    assert!(
        err.contains("empty.txt") && err.contains("is empty"),
        "{err}"
    );

    let folder = dir.path().join("folder");
    write(&folder.join("a.txt"), b"");
    write(&folder.join("b/c.txt"), b"");
    let err = Corpus::load(&folder).unwrap_err().to_string();
    assert!(err.contains("folder") && err.contains("is empty"), "{err}");

    let hidden_only = dir.path().join("hidden_only");
    write(&hidden_only.join(".secret.txt"), b"text");
    let err = Corpus::load(&hidden_only).unwrap_err().to_string();
    assert!(
        err.contains("hidden_only") && err.contains("no corpus files"),
        "{err}"
    );
}

#[test]
fn splits_take_the_last_fraction_as_validation() {
    let src = Path::new("corpus.txt");
    let tokens: Vec<u32> = (0..1003).collect();
    let splits = TokenSplits::new(&tokens, 0.1, 8, src).unwrap();
    // nanoGPT: n = 1003, train = int(0.9 * n) = 902 tokens, val = the other 101
    assert_eq!(splits.train.size(), [902]);
    assert_eq!(splits.val.size(), [101]);
    assert_eq!(splits.train.kind(), Kind::Int64);
    assert_eq!(splits.val.device(), Device::Cpu);
    assert_eq!(to_vec(&splits.train), (0..902).collect::<Vec<i64>>());
    assert_eq!(to_vec(&splits.val), (902..1003).collect::<Vec<i64>>());
    assert_eq!(to_vec(splits.get(Split::Val)), to_vec(&splits.val));

    let tokens: Vec<u32> = (0..1000).collect();
    let splits = TokenSplits::new(&tokens, 0.25, 8, src).unwrap();
    assert_eq!(splits.train.size(), [750]);
    assert_eq!(splits.val.size(), [250]);
}

#[test]
fn too_short_corpus_error_mentions_the_block_size() {
    let src = Path::new("data/tiny.txt");
    let tokens: Vec<u32> = (0..100).collect();
    // val gets 10 tokens, block_size 16 needs 17
    let err = TokenSplits::new(&tokens, 0.1, 16, src)
        .unwrap_err()
        .to_string();
    assert!(err.contains("data/tiny.txt"), "{err}");
    assert!(err.contains("model.block_size = 16"), "{err}");
    assert!(err.contains("at most 9"), "{err}");
    assert!(err.contains("val split has 10 tokens"), "{err}");
    assert!(err.contains("block_size + 1 = 17"), "{err}");

    // both splits get 50 tokens; the train split is reported first
    let err = TokenSplits::new(&tokens, 0.5, 50, src)
        .unwrap_err()
        .to_string();
    assert!(err.contains("train split has 50 tokens"), "{err}");
    assert!(err.contains("block_size + 1 = 51"), "{err}");

    // exactly block_size + 1 in the val split is enough
    assert!(TokenSplits::new(&tokens, 0.1, 9, src).is_ok());
}

#[test]
fn bad_val_fraction_is_an_error() {
    let tokens: Vec<u32> = (0..100).collect();
    for f in [0.0, 1.0, -0.5, f64::NAN] {
        let err = TokenSplits::new(&tokens, f, 4, Path::new("c.txt")).unwrap_err();
        assert!(err.to_string().contains("val_fraction"), "{err}");
    }
}

#[test]
fn random_batch_targets_are_inputs_shifted_by_one() {
    let n = 1000;
    let tokens = distinct_tokens(n);
    let source = to_vec(&tokens);
    let (b, t) = (6, 16);
    for step in 0..20 {
        let (x, y) = random_batch(&tokens, b, t, 1234, step, Device::Cpu).unwrap();
        assert_eq!(x.size(), [b as i64, t as i64]);
        assert_eq!(y.size(), [b as i64, t as i64]);
        assert_eq!(x.kind(), Kind::Int64);
        assert_eq!(y.kind(), Kind::Int64);
        let (xs, ys) = (to_vec(&x), to_vec(&y));
        for row in 0..b {
            let xr = &xs[row * t..(row + 1) * t];
            let yr = &ys[row * t..(row + 1) * t];
            let offset = source
                .iter()
                .position(|&tok| tok == xr[0])
                .expect("x token comes from the source");
            assert!(offset + t < n, "window at {offset} overruns");
            assert_eq!(xr, &source[offset..offset + t]);
            assert_eq!(yr, &source[offset + 1..offset + t + 1]);
        }
    }
}

#[test]
fn random_batch_is_reproducible_per_seed_and_step() {
    let tokens = distinct_tokens(500);
    let (x1, y1) = random_batch(&tokens, 4, 8, 7, 42, Device::Cpu).unwrap();
    let (x2, y2) = random_batch(&tokens, 4, 8, 7, 42, Device::Cpu).unwrap();
    assert!(x1.equal(&x2) && y1.equal(&y2));

    // a "resumed" run drawing only step 42 sees the same batch as one that drew 0..=42
    let mut last = None;
    for step in 0..=42 {
        last = Some(random_batch(&tokens, 4, 8, 7, step, Device::Cpu).unwrap());
    }
    let (x3, _) = last.unwrap();
    assert!(x3.equal(&x1));

    let (x_other_step, _) = random_batch(&tokens, 4, 8, 7, 43, Device::Cpu).unwrap();
    let (x_other_seed, _) = random_batch(&tokens, 4, 8, 8, 42, Device::Cpu).unwrap();
    assert!(!x_other_step.equal(&x1));
    assert!(!x_other_seed.equal(&x1));
}

#[test]
fn random_batch_steps_differ() {
    let tokens = distinct_tokens(2000);
    let firsts: BTreeSet<Vec<i64>> = (0..50)
        .map(|step| {
            let (x, _) = random_batch(&tokens, 4, 8, 99, step, Device::Cpu).unwrap();
            to_vec(&x.select(1, 0))
        })
        .collect();
    assert_eq!(firsts.len(), 50);
}

#[test]
fn random_batch_offsets_cover_the_whole_range_and_never_overrun() {
    let t = 8;
    let n = t + 1 + 3; // four possible windows: offsets 0..=3
    let tokens = Tensor::arange(n as i64, (Kind::Int64, Device::Cpu));
    let mut seen = BTreeSet::new();
    for step in 0..200 {
        let (x, y) = random_batch(&tokens, 4, t, 5, step, Device::Cpu).unwrap();
        let (xs, ys) = (to_vec(&x), to_vec(&y));
        for row in 0..4 {
            let offset = xs[row * t];
            let expected_x: Vec<i64> = (offset..offset + t as i64).collect();
            assert_eq!(&xs[row * t..(row + 1) * t], expected_x.as_slice());
            assert_eq!(ys[(row + 1) * t - 1], offset + t as i64);
            seen.insert(offset);
        }
    }
    assert_eq!(seen, (0..=3).collect::<BTreeSet<i64>>());
}

#[test]
fn random_batch_accepts_the_smallest_possible_split() {
    let tokens = Tensor::arange(5, (Kind::Int64, Device::Cpu));
    let (x, y) = random_batch(&tokens, 3, 4, 0, 0, Device::Cpu).unwrap();
    assert_eq!(to_vec(&x), [0, 1, 2, 3].repeat(3));
    assert_eq!(to_vec(&y), [1, 2, 3, 4].repeat(3));
}

#[test]
fn random_batch_refuses_tokens_it_cannot_draw_from() {
    let short = Tensor::arange(4, (Kind::Int64, Device::Cpu));
    let err = random_batch(&short, 2, 4, 0, 0, Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("model.block_size = 4"), "{err}");
    let matrix = Tensor::zeros([8, 8], (Kind::Int64, Device::Cpu));
    assert!(random_batch(&matrix, 2, 4, 0, 0, Device::Cpu).is_err());
}

#[test]
fn fixed_batches_are_deterministic() {
    let tokens = distinct_tokens(1000);
    let a = fixed_batches(&tokens, 5, 4, 16, 3, Device::Cpu).unwrap();
    let b = fixed_batches(&tokens, 5, 4, 16, 3, Device::Cpu).unwrap();
    assert_eq!(a.len(), 5);
    for ((xa, ya), (xb, yb)) in a.iter().zip(&b) {
        assert_eq!(xa.size(), [4, 16]);
        assert!(xa.equal(xb) && ya.equal(yb));
    }
    // the batches differ from one another and from another seed's
    let firsts: BTreeSet<Vec<i64>> = a.iter().map(|(x, _)| to_vec(x)).collect();
    assert_eq!(firsts.len(), 5);
    let c = fixed_batches(&tokens, 5, 4, 16, 4, Device::Cpu).unwrap();
    assert!(!a[0].0.equal(&c[0].0));
}

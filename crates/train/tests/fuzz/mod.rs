//! A small seeded mutator and a panic-catching harness for the loader fuzz tests.
//!
//! Mutations of a valid input: bit flips, interesting bytes, truncation, deleted and
//! duplicated ranges, splices from another valid input, and "interesting numbers" (0, -1,
//! huge, NaN, ...) written over a number of the text; JSON values also get structured edits
//! (a random node replaced, a key removed). A fixed seed gives the same sequence every run;
//! each target stops after its iteration count or its time budget, whichever comes first.

#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

/// Numbers (and a few non-numbers) written over numbers of the input.
pub const INTERESTING: &[&str] = &[
    "0",
    "-1",
    "1",
    "2",
    "-0.0",
    "0.5",
    "1e-320",
    "1e308",
    "-1e308",
    "1e999",
    "nan",
    "inf",
    "-inf",
    "65536",
    "16777217",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "100000000",
    "\"x\"",
    "[]",
    "{}",
    "true",
];

/// Bytes that matter to TOML and JSON parsers.
const INTERESTING_BYTES: &[u8] = b"\0\xff\"'{}[],:=\n.-+9e#\\";

/// How many iterations and how much time one target gets: `STRATA_FUZZ_ITERS` overrides the
/// count (and lifts the time budget) for longer local runs.
pub fn budget(default_iters: usize) -> (usize, Duration) {
    match std::env::var("STRATA_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(iters) => (iters, Duration::from_secs(3600)),
        None => (default_iters, Duration::from_secs(4)),
    }
}

/// A seeded source of mutations.
pub struct Mutator {
    rng: Pcg64,
}

impl Mutator {
    /// A mutator whose choices depend only on `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Pcg64::seed_from_u64(seed),
        }
    }

    /// A number in `0..n` (`n >= 1`).
    pub fn below(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n.max(1))
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.rng.random::<f64>() < p
    }

    /// `input` after one to four byte-level mutations; `others` supplies splices.
    pub fn bytes(&mut self, input: &[u8], others: &[&[u8]]) -> Vec<u8> {
        let mut out = input.to_vec();
        for _ in 0..1 + self.below(4) {
            self.mutate_once(&mut out, others);
        }
        out
    }

    /// One byte-level mutation of `out`.
    fn mutate_once(&mut self, out: &mut Vec<u8>, others: &[&[u8]]) {
        if out.is_empty() {
            out.extend_from_slice(self.pick(INTERESTING).as_bytes());
            return;
        }
        let at = self.below(out.len());
        match self.below(8) {
            0 => out[at] ^= 1 << self.below(8),
            1 => out[at] = *self.pick(INTERESTING_BYTES),
            2 => out.truncate(at),
            3 => {
                let end = (at + 1 + self.below(16)).min(out.len());
                out.drain(at..end);
            }
            4 => {
                let end = (at + 1 + self.below(64)).min(out.len());
                let copy = out[at..end].to_vec();
                let to = self.below(out.len());
                out.splice(to..to, copy);
            }
            5 if !others.is_empty() => {
                let other = *self.pick(others);
                if !other.is_empty() {
                    let from = self.below(other.len());
                    let end = (from + 1 + self.below(128)).min(other.len());
                    let to = self.below(out.len());
                    out.splice(to..to, other[from..end].iter().copied());
                }
            }
            _ => self.replace_number(out),
        }
    }

    /// Writes an interesting number over a random number (digit run) of `out`, if any.
    fn replace_number(&mut self, out: &mut Vec<u8>) {
        let runs = digit_runs(out);
        if runs.is_empty() {
            return;
        }
        let (start, end) = *self.pick(&runs);
        let value = self.pick(INTERESTING).as_bytes().to_vec();
        out.splice(start..end, value);
    }

    /// `value` with one node replaced by an interesting value, or one object key removed.
    pub fn json(&mut self, value: &serde_json::Value) -> serde_json::Value {
        let mut out = value.clone();
        let count = count_nodes(&out);
        let target = self.below(count);
        let replacement = self.json_leaf();
        let remove = self.chance(0.2);
        edit_node(&mut out, &mut { target }, &replacement, remove);
        out
    }

    /// An interesting JSON value.
    fn json_leaf(&mut self) -> serde_json::Value {
        use serde_json::json;
        match self.below(10) {
            0 => json!(null),
            1 => json!(""),
            2 => json!([]),
            3 => json!({}),
            4 => json!(-1),
            5 => json!(u64::MAX),
            6 => json!(1e308),
            7 => json!(i64::MIN),
            8 => json!(0),
            _ => json!("\u{0}x\u{ffff}"),
        }
    }
}

/// The `(start, end)` byte ranges of the digit runs of `text`.
fn digit_runs(text: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if text[i].is_ascii_digit() {
            let start = i;
            while i < text.len() && (text[i].is_ascii_digit() || text[i] == b'.') {
                i += 1;
            }
            runs.push((start, i));
        } else {
            i += 1;
        }
    }
    runs
}

/// Number of nodes of a JSON value, itself included.
fn count_nodes(value: &serde_json::Value) -> usize {
    1 + match value {
        serde_json::Value::Array(items) => items.iter().map(count_nodes).sum(),
        serde_json::Value::Object(map) => map.values().map(count_nodes).sum(),
        _ => 0,
    }
}

/// Replaces the `target`-th node (pre-order) by `replacement`, or removes it from its object
/// when `remove`; returns true once done.
fn edit_node(
    value: &mut serde_json::Value,
    target: &mut usize,
    replacement: &serde_json::Value,
    remove: bool,
) -> bool {
    if *target == 0 {
        *value = replacement.clone();
        return true;
    }
    *target -= 1;
    match value {
        serde_json::Value::Array(items) => items
            .iter_mut()
            .any(|item| edit_node(item, target, replacement, remove)),
        serde_json::Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                if *target == 0 && remove {
                    map.remove(&key);
                    return true;
                }
                let Some(child) = map.get_mut(&key) else {
                    continue;
                };
                if edit_node(child, target, replacement, remove) {
                    return true;
                }
            }
            false
        }
        _ => false,
    }
}

/// Runs `check` on `iters` inputs made by `make` (within the time budget), each under
/// `catch_unwind`; fails naming the first input that panicked. Returns (inputs tried,
/// inputs accepted).
pub fn run<I: std::fmt::Debug>(
    name: &str,
    seed: u64,
    default_iters: usize,
    mut make: impl FnMut(&mut Mutator) -> I,
    mut check: impl FnMut(&I) -> bool,
) -> (usize, usize) {
    let (iters, time) = budget(default_iters);
    let mut mutator = Mutator::new(seed);
    let start = Instant::now();
    let (mut tried, mut accepted) = (0, 0);
    while tried < iters && start.elapsed() < time {
        let input = make(&mut mutator);
        match catch_unwind(AssertUnwindSafe(|| check(&input))) {
            Ok(ok) => accepted += usize::from(ok),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                let mut shown = format!("{input:?}");
                if shown.len() > 4000 {
                    let mut cut = 4000;
                    while !shown.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    shown.truncate(cut);
                    shown.push_str(" ...");
                }
                panic!("{name}: input {tried} (seed {seed}) panicked: {message}\ninput: {shown}");
            }
        }
        tried += 1;
    }
    eprintln!(
        "{name}: {tried} inputs in {:?}, {accepted} accepted",
        start.elapsed()
    );
    (tried, accepted)
}

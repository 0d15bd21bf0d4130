//! Bounds of the numeric command-line arguments, checked by clap where they are parsed, so a
//! bad value is refused with the argument's name and the accepted range before any work.

use clap::builder::{RangedU64ValueParser, TypedValueParser, ValueParser};

/// Most tokens `strata sample --tokens` generates (one forward pass each).
pub const MAX_SAMPLE_TOKENS: u64 = 1_000_000;

/// Most runs `strata sweep --jobs` trains at once (one process each).
pub const MAX_JOBS: u64 = 1024;

/// Most seeds or steps a study argument may ask for.
pub const MAX_STUDY_COUNT: u64 = 1 << 32;

/// Most validation tokens a study evaluation may ask for.
pub const MAX_EVAL_TOKENS: u64 = 1 << 40;

/// A count from 1 to `max`, parsed into a `usize`.
pub fn count(max: u64) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::<usize>::new().range(1..=max)
}

/// A count from 1 to `max`, parsed into a `u64`.
pub fn count_u64(max: u64) -> RangedU64ValueParser<u64> {
    RangedU64ValueParser::<u64>::new().range(1..=max)
}

/// A batch count (`eval --batches`): at least 1; its upper bound depends on the corpus and
/// is checked where the corpus is read.
pub fn batches() -> RangedU64ValueParser<usize> {
    count(u64::MAX)
}

/// A softmax temperature: finite and at least 0 (0 is greedy decoding).
pub fn temperature() -> ValueParser {
    ValueParser::new(
        clap::builder::StringValueParser::new().try_map(|text: String| {
            match text.trim().parse::<f64>() {
                Ok(t) if t.is_finite() && t >= 0.0 => Ok(t),
                Ok(t) => Err(format!("{t} is not a finite number >= 0 (0: greedy)")),
                Err(e) => Err(format!("{text:?} is not a number: {e}")),
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// A command with every kind of bounded argument.
    #[derive(Parser)]
    struct Probe {
        #[arg(long, value_parser = count(MAX_JOBS))]
        jobs: Option<usize>,
        #[arg(long, value_parser = temperature())]
        temperature: Option<f64>,
    }

    #[test]
    fn counts_and_temperatures_outside_their_range_are_refused_by_name() {
        let parse = |args: &[&str]| Probe::try_parse_from([&["probe"], args].concat());
        let ok = parse(&["--jobs", "1024", "--temperature", "0"]).unwrap();
        assert_eq!((ok.jobs, ok.temperature), (Some(1024), Some(0.0)));
        for bad in ["--jobs=0", "--jobs=1025", "--jobs=-3", "--jobs=many"] {
            let err = parse(&[bad]).err().unwrap().to_string();
            assert!(err.contains("--jobs"), "{err}");
        }
        for bad in ["-0.5", "nan", "inf", "warm"] {
            let err = parse(&[&format!("--temperature={bad}")])
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains("--temperature") && err.contains(bad), "{err}");
        }
    }
}

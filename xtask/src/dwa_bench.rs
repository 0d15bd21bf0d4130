//! The DenseFormer overhead part of `cargo xtask bench`: median training-step time and peak
//! memory of a baseline, DenseFormer 1x1 and DenseFormer 4x5 of the same width at 12, 24 and
//! 48 layers, and of every `[model.depth]` method at 12 layers, each configuration in a fresh
//! process (`benches/src/bin/dwa_overhead.rs`).

use crate::bench::last_json;
use crate::plan::{Built, Child};
use crate::run;
use crate::torch_env::TorchEnv;
use serde_json::Value;

/// Model width of every configuration.
const WIDTH: usize = 256;
/// Timed steps per process (after 2 warm-up steps).
const STEPS: usize = 10;
/// The DWA variants (pattern, weighted-sum path), baseline first; the reference path shows
/// what the fused layer stack saves.
const VARIANTS: [(&str, &str); 4] = [
    ("none", "auto"),
    ("1x1", "auto"),
    ("1x1", "reference"),
    ("4x5", "auto"),
];
/// The `[model.depth]` methods (`dwa_overhead --depth` labels), the configurations of
/// docs/experiments/depth.md, measured at [`DEPTH_METHOD_LAYERS`] next to DWA.
const DEPTH_METHODS: [&str; 10] = [
    "vres",
    "laurel-rw",
    "laurel-lr16",
    "shc4",
    "dhc4",
    "mhc4",
    "dmhc4",
    "attnres",
    "attnres-b2",
    "mudd",
];
/// The depth at which the `[model.depth]` methods are measured.
const DEPTH_METHOD_LAYERS: usize = 12;

/// One configuration's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Overhead {
    /// Number of blocks.
    pub layers: usize,
    /// `none`, the DWA's `KxP` or a depth method's label (`mudd`, `dhc4`, ...).
    pub variant: String,
    /// The weighted-sum path (`auto`: the fused layer stack; `reference`).
    pub path: String,
    /// Median milliseconds per optimizer step.
    pub ms_per_step: f64,
    /// Peak resident memory of the process (MiB).
    pub peak_mib: f64,
    /// Resident memory before the first step (MiB): libtorch, weights, data.
    pub before_mib: f64,
}

impl Overhead {
    /// Reads the JSON line printed by `dwa_overhead` for a run of `path`.
    pub(crate) fn parse(v: &Value, path: &str) -> Result<Self, String> {
        let num = |k: &str| {
            v.get(k)
                .and_then(Value::as_f64)
                .ok_or(format!("dwa_overhead printed no `{k}`"))
        };
        let dwa = v
            .get("dwa")
            .and_then(Value::as_str)
            .ok_or("dwa_overhead printed no `dwa`")?;
        // Lines without `depth` or `precision` come from before those were measured.
        let depth = v.get("depth").and_then(Value::as_str).unwrap_or("none");
        let variant = if depth == "none" { dwa } else { depth };
        let variant = match v.get("precision").and_then(Value::as_str) {
            None | Some("f32") => variant.to_owned(),
            Some(precision) => format!("{variant} {precision}"),
        };
        Ok(Self {
            layers: num("layers")? as usize,
            variant,
            path: path.to_owned(),
            ms_per_step: num("ms_per_step")?,
            peak_mib: num("peak_mib")?,
            before_mib: num("before_mib")?,
        })
    }

    /// Memory the training steps added on top of what was resident before them (MiB).
    fn training_mib(&self) -> f64 {
        self.peak_mib - self.before_mib
    }
}

/// The median of each figure over rounds of the same configuration.
pub(crate) fn medians(rounds: &[Overhead]) -> Vec<Overhead> {
    let mut out: Vec<Overhead> = Vec::new();
    for r in rounds {
        if out
            .iter()
            .any(|o| (o.layers, &o.variant, &o.path) == (r.layers, &r.variant, &r.path))
        {
            continue;
        }
        let same: Vec<&Overhead> = rounds
            .iter()
            .filter(|o| (o.layers, &o.variant, &o.path) == (r.layers, &r.variant, &r.path))
            .collect();
        let median =
            |f: fn(&Overhead) -> f64| crate::bench::median(same.iter().map(|o| f(o)).collect());
        out.push(Overhead {
            ms_per_step: median(|o| o.ms_per_step),
            peak_mib: median(|o| o.peak_mib),
            before_mib: median(|o| o.before_mib),
            ..r.clone()
        });
    }
    out
}

/// One process of the overhead measurement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DwaRun {
    /// The round, from 1.
    pub round: usize,
    /// Number of blocks.
    pub layers: usize,
    /// The `dwa_overhead` option naming the variant: `--dwa` or `--depth`.
    pub flag: &'static str,
    /// `none`, the DWA's `KxP` or a depth method's label.
    pub variant: &'static str,
    /// The weighted-sum path.
    pub path: &'static str,
    /// `dwa_overhead` with its arguments.
    pub child: Child,
}

/// The configurations at `layers` blocks: the DWA variants, then (at
/// [`DEPTH_METHOD_LAYERS`]) the depth methods, as (flag, variant, path).
fn configurations(layers: usize) -> Vec<(&'static str, &'static str, &'static str)> {
    let mut all: Vec<_> = VARIANTS.iter().map(|&(v, p)| ("--dwa", v, p)).collect();
    if layers == DEPTH_METHOD_LAYERS {
        all.extend(DEPTH_METHODS.iter().map(|&m| ("--depth", m, "auto")));
    }
    all
}

/// Every configuration `rounds` times, alternating configurations within a round and
/// reversing their order every other round (`quick`: 12 layers only).
pub fn runs(quick: bool, rounds: usize) -> Vec<DwaRun> {
    let depths: &[usize] = if quick { &[12] } else { &[12, 24, 48] };
    let mut all = Vec::new();
    for round in 1..=rounds {
        for &layers in depths {
            // Every other round runs the configurations in reverse, so that no configuration
            // always follows the same one (the VM's speed drifts within a round).
            let mut order = configurations(layers);
            if round % 2 == 0 {
                order.reverse();
            }
            for (flag, variant, path) in order {
                let args = [
                    "--layers".to_owned(),
                    layers.to_string(),
                    flag.to_owned(),
                    variant.to_owned(),
                    "--kernel".to_owned(),
                    path.to_owned(),
                    "--width".to_owned(),
                    WIDTH.to_string(),
                    "--steps".to_owned(),
                    STEPS.to_string(),
                ];
                let child = Child::release("strata-benches", "dwa_overhead", &args);
                all.push(DwaRun {
                    round,
                    layers,
                    flag,
                    variant,
                    path,
                    child,
                });
            }
        }
    }
    all
}

/// Runs every process of `runs` (with `dwa_overhead` among the `built` binaries) and returns
/// the medians over rounds.
pub fn measure(env: &TorchEnv, built: &Built, runs: &[DwaRun]) -> Result<Vec<Overhead>, String> {
    let mut all = Vec::new();
    for r in runs {
        let (round, layers, flag, variant, path) = (r.round, r.layers, r.flag, r.variant, r.path);
        eprintln!(
            "xtask: DenseFormer overhead, round {round}: {layers} layers, {flag} {variant} ({path})"
        );
        let output = r
            .child
            .command(env, built)?
            .output()
            .map_err(|e| format!("cannot start dwa_overhead: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "dwa_overhead --layers {layers} {flag} {variant} failed ({}): {}",
                run::describe(&output.status),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        all.push(Overhead::parse(&last_json(&stdout)?, path)?);
    }
    Ok(medians(&all))
}

/// The markdown section: every figure, its ratio to the baseline of the same depth, and the
/// issue's targets.
pub fn section(results: &[Overhead]) -> String {
    let mut s = format!(
        "## DenseFormer overhead\n\n\
         Command: `cargo xtask bench` (`dwa_overhead --layers L --dwa V --width {WIDTH}`, one \
         process per row). One optimizer step (forward, backward, clip, AdamW) of a width-{WIDTH} \
         model (4 heads, byte vocabulary) on 8 x 128 tokens with the CPU data-parallel workers; \
         median of 10 steps after 2 warm-up steps, then the median over rounds (configurations \
         alternate within a round, in reverse order every other round). `fused` is the layer stack of strata-kernels (what training \
         uses); `reference` keeps live tensors and sums them op by op \
         (`--kernel reference`). Peak is the process's VmHWM; training memory \
         is the peak minus what was resident before the first step. Targets: 4x5 within 1.05x \
         of the baseline's step time, 1x1 within 1.15x, peak memory within 1.10x.\n\n\
         At {DEPTH_METHOD_LAYERS} layers the `[model.depth]` methods of docs/depth.md \
         (`dwa_overhead --depth M`) are measured the same way, in the same rounds: `vres` the \
         value residual, `laurel-rw` and `laurel-lr16` LAuReL, `shc4`/`dhc4` static and \
         dynamic hyper-connections with 4 streams, `mhc4`/`dmhc4` mHC, `attnres` attention \
         residuals, `mudd` MUDD. They have no targets; their FLOPs per step are counted in \
         docs/experiments/depth.md.\n\n"
    );
    s += &table(results);
    s
}

/// Every figure, its ratio to the baseline of the same depth, and the issue's targets (the
/// time targets for the fused path only), as two markdown tables.
pub fn table(results: &[Overhead]) -> String {
    let mut s = "| layers | variant | path | ms/step | x baseline | peak MiB | x baseline | \
                 training MiB | x baseline |\n|---|---|---|---|---|---|---|---|---|\n"
        .to_owned();
    let mut verdicts = Vec::new();
    for r in results {
        let Some(base) = results
            .iter()
            .find(|b| b.layers == r.layers && b.variant == "none")
        else {
            continue;
        };
        let time = r.ms_per_step / base.ms_per_step;
        let peak = r.peak_mib / base.peak_mib;
        let training = r.training_mib() / base.training_mib();
        let path = match (r.variant.as_str(), r.path.as_str()) {
            ("none", _) => "",
            (_, "auto") => "fused",
            (_, other) => other,
        };
        s += &format!(
            "| {} | {} | {path} | {:.1} | {time:.3} | {:.0} | {peak:.3} | {:.0} | {training:.3} |\n",
            r.layers,
            if r.variant == "none" {
                "baseline"
            } else {
                &r.variant
            },
            r.ms_per_step,
            r.peak_mib,
            r.training_mib(),
        );
        let time_target = match (r.variant.as_str(), r.path.as_str()) {
            ("1x1", "auto") => Some(1.15),
            ("4x5", "auto") => Some(1.05),
            _ => None,
        };
        if let Some(target) = time_target {
            verdicts.push(format!(
                "| {} layers, {}: step time <= {target}x | {time:.3}x | {} |\n",
                r.layers,
                r.variant,
                if time <= target { "met" } else { "**not met**" }
            ));
            verdicts.push(format!(
                "| {} layers, {}: peak memory <= 1.10x | {peak:.3}x | {} |\n",
                r.layers,
                r.variant,
                if peak <= 1.10 { "met" } else { "**not met**" }
            ));
        }
    }
    s += "\n| target | measured | |\n|---|---|---|\n";
    for v in verdicts {
        s += &v;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(layers: usize, variant: &str, ms: f64, peak: f64) -> Overhead {
        Overhead {
            layers,
            variant: variant.to_owned(),
            path: "auto".to_owned(),
            ms_per_step: ms,
            peak_mib: peak,
            before_mib: 100.0,
        }
    }

    #[test]
    fn the_section_states_ratios_and_verdicts_per_depth() {
        let text = section(&[
            row(12, "none", 100.0, 300.0),
            row(12, "1x1", 110.0, 340.0),
            row(12, "4x5", 106.0, 310.0),
        ]);
        assert!(
            text.contains("| 12 | 1x1 | fused | 110.0 | 1.100 | 340 | 1.133 | 240 | 1.200 |"),
            "{text}"
        );
        assert!(
            text.contains("| 12 layers, 1x1: step time <= 1.15x | 1.100x | met |"),
            "{text}"
        );
        assert!(
            text.contains("| 12 layers, 1x1: peak memory <= 1.10x | 1.133x | **not met** |"),
            "{text}"
        );
        assert!(
            text.contains("| 12 layers, 4x5: step time <= 1.05x | 1.060x | **not met** |"),
            "{text}"
        );
    }

    #[test]
    fn the_json_line_of_the_bench_binary_parses() {
        let v: Value = serde_json::from_str(
            r#"{"layers": 24, "width": 256, "dwa": "4x5", "params": 1, "ms_per_step": 12.5, "peak_mib": 400.0, "before_mib": 150.0}"#,
        )
        .unwrap();
        let o = Overhead::parse(&v, "auto").unwrap();
        assert_eq!(o, row(24, "4x5", 12.5, 400.0).with_before(150.0));
        assert!(Overhead::parse(&serde_json::json!({"layers": 1}), "auto").is_err());
    }

    #[test]
    fn a_depth_method_line_is_its_own_variant_without_targets() {
        let v: Value = serde_json::from_str(
            r#"{"layers": 12, "width": 256, "dwa": "none", "depth": "mudd", "params": 1, "ms_per_step": 120.0, "peak_mib": 330.0, "before_mib": 100.0}"#,
        )
        .unwrap();
        let mudd = Overhead::parse(&v, "auto").unwrap();
        assert_eq!(mudd, row(12, "mudd", 120.0, 330.0));
        let text = table(&[row(12, "none", 100.0, 300.0), mudd]);
        assert!(
            text.contains("| 12 | mudd | fused | 120.0 | 1.200 | 330 | 1.100 | 230 | 1.150 |"),
            "{text}"
        );
        assert!(!text.contains("mudd: step time"), "{text}");
    }

    #[test]
    fn a_lower_precision_is_its_own_variant_read_against_the_f32_baseline() {
        let v: Value = serde_json::from_str(
            r#"{"layers": 12, "width": 768, "dwa": "none", "depth": "none", "precision": "bf16_autocast", "ms_per_step": 50.0, "peak_mib": 240.0, "before_mib": 100.0}"#,
        )
        .unwrap();
        let fast = Overhead::parse(&v, "auto").unwrap();
        assert_eq!(fast.variant, "none bf16_autocast");
        let text = table(&[row(12, "none", 100.0, 300.0), fast]);
        assert!(
            text.contains("| 12 | none bf16_autocast | fused | 50.0 | 0.500 | 240 | 0.800 |"),
            "{text}"
        );
    }

    #[test]
    fn depth_methods_run_at_twelve_layers_in_every_round_next_to_the_baseline() {
        let all = runs(false, 2);
        for round in 1..=2 {
            let of_round: Vec<&DwaRun> = all.iter().filter(|r| r.round == round).collect();
            let depth: Vec<&str> = of_round
                .iter()
                .filter(|r| r.flag == "--depth")
                .map(|r| r.variant)
                .collect();
            assert_eq!(depth.len(), DEPTH_METHODS.len());
            assert!(DEPTH_METHODS.iter().all(|m| depth.contains(m)));
            assert!(
                of_round
                    .iter()
                    .filter(|r| r.flag == "--depth")
                    .all(|r| r.layers == 12)
            );
            // 4 DWA variants at each of 3 depths, and the depth methods.
            assert_eq!(of_round.len(), 3 * VARIANTS.len() + DEPTH_METHODS.len());
        }
        let first = all.iter().find(|r| r.variant == "mudd").unwrap();
        assert!(
            first.child.line().contains("--depth mudd"),
            "{}",
            first.child.line()
        );
    }

    #[test]
    fn medians_are_taken_per_configuration() {
        let m = medians(&[
            row(12, "none", 100.0, 300.0),
            row(12, "1x1", 130.0, 340.0),
            row(12, "none", 90.0, 310.0),
            row(12, "1x1", 110.0, 330.0),
            row(12, "none", 95.0, 320.0),
        ]);
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].ms_per_step, m[0].peak_mib), (95.0, 310.0));
        assert_eq!((m[1].ms_per_step, m[1].peak_mib), (120.0, 335.0));
    }

    impl Overhead {
        fn with_before(mut self, before: f64) -> Self {
            self.before_mib = before;
            self
        }
    }
}

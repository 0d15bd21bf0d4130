//! The sweep's measured multipliers on synthetic grids with a known answer: a variant worth
//! a known multiplier of compute is recovered inside its paired interval, the baseline
//! against itself (with noise) gives 1 inside its interval, cells past the baseline's
//! longest run are refused with the reason, and one seed gives no interval.

use std::path::Path;
use strata_stats::Normal;
use strata_sweep::SweepConfig;
use strata_sweep::measured::measured;
use strata_sweep::runner::SweepRecord;
use strata_train::RunConfig;

/// Loss of a model of `width` at `compute`: linear in log compute (so that the curve's
/// interpolation is exact and the known multiplier is the true one), lower for wider models.
fn law(width: usize, compute: f64) -> f64 {
    4.0 - 0.2 * (width as f64).ln() - 0.12 * (compute / 1e9).ln()
}

/// A sweep file over two sizes and four budgets with a baseline and `variant`.
fn sweep_file(dir: &Path) -> SweepConfig {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/nanogpt-cpu.toml");
    let text = format!(
        "base = \"{}\"\ntokens = [1000, 2000, 4000, 8000]\nseeds = [1, 2, 3, 4, 5, 6]\n\
         [[sizes]]\nn_layer = 2\nd_model = 32\nn_head = 2\n\
         [[sizes]]\nn_layer = 4\nd_model = 64\nn_head = 2\n\
         [[variants]]\nname = \"baseline\"\n[[variants]]\nname = \"variant\"\n",
        base.display()
    );
    let file = dir.join("sweep.toml");
    std::fs::write(&file, text).unwrap();
    SweepConfig::load(&file).unwrap()
}

/// Records of `sweep` where the variant's loss at compute `c` is the baseline's at `c·m`,
/// each seed shifts both arms alike by a shared offset, and every run adds `noise`.
fn records(sweep: &SweepConfig, m: f64, noise: f64, seed: u64) -> Vec<SweepRecord> {
    let mut normal = Normal::new(seed);
    let config = RunConfig::load(&sweep.base, &[]).unwrap();
    let mut out = Vec::new();
    for &s in &sweep.seeds {
        let offset = 0.05 * normal.sample();
        for (v, worth) in [("baseline", 1.0), ("variant", m)] {
            for size in &sweep.sizes {
                for &tokens in &sweep.tokens {
                    let compute = tokens as f64 * 1e6 * size.d_model as f64;
                    let loss =
                        law(size.d_model, compute * worth) + offset + noise * normal.sample();
                    out.push(SweepRecord {
                        run: format!("{v}-{}-{s}-{tokens}", size.d_model),
                        variant: v.to_owned(),
                        n_layer: size.n_layer,
                        d_model: size.d_model,
                        n_head: size.n_head,
                        seed: s,
                        params_total: 1,
                        params_non_embedding: size.d_model * size.d_model * 12,
                        token_budget: tokens,
                        tokens,
                        steps: tokens,
                        train_flops: compute,
                        wall_s: 1.0,
                        final_val_loss: loss,
                        best_val_loss: loss,
                        config: config.clone(),
                    });
                }
            }
        }
    }
    out
}

#[test]
fn a_known_multiplier_is_recovered_inside_its_paired_interval() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = sweep_file(dir.path());
    let m = &measured(&sweep, &records(&sweep, 1.4, 0.002, 3))[0];
    let p = m.log_multiplier.as_ref().unwrap();
    let (lo, hi) = (p.t_interval.0.exp(), p.t_interval.1.exp());
    assert!(lo < 1.4 && 1.4 < hi, "1.4 outside {lo:.3} to {hi:.3}");
    assert!(lo > 1.0, "the interval must exclude 1: {lo:.3} to {hi:.3}");
    assert!(p.p_greater < 0.05);
    assert!(m.verdict.contains("is worth"), "{}", m.verdict);
    // The variant beats the baseline's longest run at every size: that budget is refused,
    // named, and the three shorter ones are counted.
    for size in &m.sizes {
        assert_eq!(size.counted_budgets, vec![1000, 2000, 4000]);
        let refused = size.cells.iter().find(|c| c.token_budget == 8000).unwrap();
        let why = refused.multiplier.as_ref().unwrap_err();
        assert!(why.contains("never reached"), "{why}");
    }
    // The loss difference at the same budget is positive and resolved.
    let d = m.loss_difference.as_ref().unwrap();
    assert!(d.t_interval.0 > 0.0, "{d:?}");
}

#[test]
fn the_baseline_against_itself_gives_one_inside_its_interval() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = sweep_file(dir.path());
    for seed in [1, 2] {
        let m = &measured(&sweep, &records(&sweep, 1.0, 0.004, seed))[0];
        let p = m.log_multiplier.as_ref().unwrap();
        assert!(
            p.t_interval.0 < 0.0 && p.t_interval.1 > 0.0,
            "A/A interval excludes 1 at generator seed {seed}: {p:?}"
        );
        assert!(p.p_greater > 0.05 || p.p_greater.is_nan());
        assert!(
            m.verdict.contains("no difference resolved"),
            "{}",
            m.verdict
        );
    }
}

#[test]
fn one_seed_gives_readings_but_no_interval() {
    let dir = tempfile::tempdir().unwrap();
    let mut sweep = sweep_file(dir.path());
    sweep.seeds = vec![1];
    let m = &measured(&sweep, &records(&sweep, 1.4, 0.0, 1))[0];
    let why = m.log_multiplier.as_ref().unwrap_err();
    assert!(why.contains("at least 2"), "{why}");
    let cell = &m.sizes[0].cells[0];
    let exact = cell.multiplier.as_ref().unwrap();
    assert!((exact - 1.4).abs() < 0.05, "{exact}");
}

//! Muon and the role-based parameter groups: the Newton-Schulz iteration against a float64
//! loop, one Muon step against a hand computation, group assignment for every model kind, the
//! default optimizer unchanged, momentum carried through growth, and bad settings refused.

mod common;

use common::BASE;
use strata_core::{Gpt, ModelConfig};
use strata_growth::{GrowthOp, Moments, Snapshot};
use strata_train::muon::{Muon, MuonConfig, NS_COEFFICIENTS, newton_schulz};
use strata_train::optim::{AdamW, AdamWConfig};
use strata_train::optimizer::{Optimizer, OptimizerConfig, OptimizerKind, ParamGroup};
use strata_train::{RunConfig, checkpoint};
use tch::{Device, Kind, Tensor, nn};

/// A dense matrix of f64 as rows.
type Matrix = Vec<Vec<f64>>;

/// `a · b`: every row of `a` dotted with every column of `b`.
fn matmul(a: &Matrix, b: &Matrix) -> Matrix {
    let columns = transpose(b);
    a.iter()
        .map(|row| {
            columns
                .iter()
                .map(|col| row.iter().zip(col).map(|(x, y)| x * y).sum())
                .collect()
        })
        .collect()
}

/// The transpose.
fn transpose(a: &Matrix) -> Matrix {
    (0..a[0].len())
        .map(|j| a.iter().map(|row| row[j]).collect())
        .collect()
}

/// `x · a + y · b` elementwise.
fn axpby(x: f64, a: &Matrix, y: f64, b: &Matrix) -> Matrix {
    a.iter()
        .zip(b)
        .map(|(ra, rb)| ra.iter().zip(rb).map(|(p, q)| x * p + y * q).collect())
        .collect()
}

/// Muon's Newton-Schulz iteration on nested vectors in f64, written from the paper's
/// description: normalise by the Frobenius norm (+1e-7), transpose a tall matrix, five steps
/// of `X ← a·X + (b·A + c·A²)·X` with `A = X·Xᵀ`, transpose back.
fn ns_reference(g: &Matrix, steps: usize) -> Matrix {
    let (a, b, c) = (3.4445, -4.7750, 2.0315);
    let tall = g.len() > g[0].len();
    let mut x = if tall { transpose(g) } else { g.clone() };
    let norm = x.iter().flatten().map(|v| v * v).sum::<f64>().sqrt() + 1e-7;
    x = axpby(1.0 / norm, &x, 0.0, &x);
    for _ in 0..steps {
        let gram = matmul(&x, &transpose(&x));
        let poly = axpby(b, &gram, c, &matmul(&gram, &gram));
        x = axpby(a, &x, 1.0, &matmul(&poly, &x));
    }
    if tall { transpose(&x) } else { x }
}

/// A tensor's values as nested rows.
fn rows(t: &Tensor) -> Matrix {
    let t = t.to_kind(Kind::Double);
    (0..t.size()[0])
        .map(|i| Vec::<f64>::try_from(t.get(i)).unwrap())
        .collect()
}

/// Nested rows as a `[n, m]` f64 tensor.
fn tensor(m: &Matrix) -> Tensor {
    let flat: Vec<f64> = m.iter().flatten().copied().collect();
    Tensor::from_slice(&flat).view([m.len() as i64, m[0].len() as i64])
}

/// Largest elementwise difference.
fn max_diff(a: &Matrix, b: &Matrix) -> f64 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// `U · diag(s) · Vᵀ` with random orthogonal `U` `[n, k]` and `V` `[m, k]`, `k = min(n, m)`.
fn with_singular_values(n: i64, m: i64, s: &[f64], seed: u64) -> Tensor {
    strata_tensor::seeded(seed, || {
        let opts = (Kind::Double, Device::Cpu);
        let (u, _) = Tensor::randn([n, n], opts).qr(true);
        let (v, _) = Tensor::randn([m, m], opts).qr(true);
        let k = s.len() as i64;
        u.narrow(1, 0, k)
            .matmul(&Tensor::from_slice(s).diag(0))
            .matmul(&v.narrow(1, 0, k).tr())
    })
}

#[test]
fn newton_schulz_matches_a_float64_loop_in_f64_and_f32() {
    assert_eq!(NS_COEFFICIENTS, (3.4445, -4.7750, 2.0315));
    for (n, m, seed) in [(6, 9, 1), (9, 6, 2), (7, 7, 3)] {
        let g = strata_tensor::seeded(seed, || Tensor::randn([n, m], (Kind::Double, Device::Cpu)));
        let want = ns_reference(&rows(&g), 5);
        let got = newton_schulz(&g, 5).unwrap();
        assert_eq!(got.size(), [n, m]);
        assert!(max_diff(&rows(&got), &want) < 1e-12, "{n}x{m} f64");
        let got32 = newton_schulz(&g.to_kind(Kind::Float), 5).unwrap();
        assert_eq!(got32.kind(), Kind::Float);
        assert!(max_diff(&rows(&got32), &want) < 1e-4, "{n}x{m} f32");
    }
    assert!(newton_schulz(&Tensor::ones([3], (Kind::Float, Device::Cpu)), 5).is_err());
}

#[test]
fn newton_schulz_pushes_singular_values_into_the_designed_band() {
    let opts = (Kind::Double, Device::Cpu);
    let cases: Vec<(&str, Tensor)> = vec![
        (
            "random wide",
            strata_tensor::seeded(4, || Tensor::randn([32, 64], opts)),
        ),
        (
            "random tall",
            strata_tensor::seeded(5, || Tensor::randn([96, 24], opts)),
        ),
        (
            "condition number 100",
            with_singular_values(32, 48, &logspace(1.0, 1e-2, 32), 6),
        ),
        (
            "condition number 200, one dominant direction",
            with_singular_values(40, 24, &[vec![10.0], logspace(1.0, 5e-2, 23)].concat(), 7),
        ),
    ];
    for (what, g) in cases {
        for kind in [Kind::Double, Kind::Float] {
            let x = newton_schulz(&g.to_kind(kind), 5)
                .unwrap()
                .to_kind(Kind::Double);
            let (_, s, _) = x.svd(true, false);
            let s = Vec::<f64>::try_from(s).unwrap();
            let (lo, hi) = s
                .iter()
                .fold((f64::MAX, 0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            assert!(
                // The quintic's range on its attracting band is [0.678, 1.203].
                lo > 0.67 && hi < 1.21,
                "{what} {kind:?}: singular values in [{lo}, {hi}]"
            );
            // It is the polar factor U·Vᵀ of g (same singular vectors), not just any
            // near-orthogonal matrix: ⟨X, U·Vᵀ⟩ / k is the mean singular value.
            let (u, _, v) = g.svd(true, true);
            let polar = u.matmul(&v.tr());
            let k = s.len() as f64;
            let mean = s.iter().sum::<f64>() / k;
            let align = (&x * &polar).sum(Kind::Double).double_value(&[]) / k;
            assert!((align - mean).abs() < 1e-4, "{what}: {align} vs {mean}");
        }
    }
}

/// `n` values from `from` down to `to`, evenly spaced in log scale.
fn logspace(from: f64, to: f64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| from * (to / from).powf(i as f64 / (n - 1) as f64))
        .collect()
}

#[test]
fn a_muon_step_matches_a_hand_computation() {
    let config = MuonConfig {
        momentum: 0.95,
        nesterov: true,
        ns_steps: 5,
        weight_decay: 0.1,
    };
    // A wide and a tall matrix (scale sqrt(max(1, rows/cols)) = 1 and sqrt(3/2)).
    let wide0: Matrix = vec![vec![0.5, -1.0, 0.25], vec![2.0, 0.1, -0.3]];
    let tall0 = transpose(&wide0);
    let grads: [Matrix; 2] = [
        vec![vec![0.3, -0.2, 0.1], vec![0.7, -0.5, 0.4]],
        vec![vec![0.2, 0.1, 0.05], vec![0.05, -0.3, 0.2]],
    ];
    let lr = 0.02;
    let wide = tensor(&wide0).set_requires_grad(true);
    let tall = tensor(&tall0).set_requires_grad(true);
    let mut muon = Muon::new(
        vec![
            ("w".to_owned(), wide.shallow_clone()),
            ("t".to_owned(), tall.shallow_clone()),
        ],
        config,
    )
    .unwrap();
    for g in &grads {
        for p in [&wide, &tall] {
            p.shallow_clone().zero_grad();
        }
        let loss = (&wide * tensor(g)).sum(Kind::Double)
            + (&tall * tensor(&transpose(g))).sum(Kind::Double);
        loss.backward();
        muon.step(lr).unwrap();
    }
    // By hand: buf ← 0.95·buf + 0.05·g; u = 0.05·g + 0.95·buf; p ← p·(1 - lr·wd) - lr·s·NS(u).
    for (p0, got, flip, scale) in [
        (&wide0, &wide, false, 1.0),
        (&tall0, &tall, true, 1.5f64.sqrt()),
    ] {
        let (mut p, mut buf) = (p0.clone(), axpby(0.0, p0, 0.0, p0));
        for g in &grads {
            let g = if flip { transpose(g) } else { g.clone() };
            buf = axpby(0.95, &buf, 0.05, &g);
            let u = axpby(0.05, &g, 0.95, &buf);
            let o = ns_reference(&u, 5);
            p = axpby(1.0 - lr * 0.1, &p, -lr * scale, &o);
        }
        let diff = max_diff(&rows(got), &p);
        assert!(diff < 1e-12, "flip {flip}: {diff}");
        assert!(max_diff(&rows(got), p0) > 1e-3, "the matrix moved");
    }
    assert_eq!(muon.steps_taken(), 2);
    let saved = muon.state_tensors();
    assert_eq!(saved.len(), 2);
    assert!(saved.iter().any(|(n, _)| n == "muon_momentum.w"));
}

#[test]
fn muon_refuses_anything_but_a_matrix() {
    let config = MuonConfig {
        momentum: 0.95,
        nesterov: true,
        ns_steps: 5,
        weight_decay: 0.0,
    };
    let gain = Tensor::ones([4], (Kind::Float, Device::Cpu));
    let err = match Muon::new(vec![("h.0.ln_1.weight".to_owned(), gain)], config) {
        Ok(_) => panic!("a 1-D parameter was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("h.0.ln_1.weight") && err.contains("2-D"),
        "{err}"
    );
}

/// Muon settings for a tiny model.
fn muon_settings() -> OptimizerConfig {
    OptimizerConfig {
        kind: OptimizerKind::Muon,
        muon_lr: Some(0.02),
        ..OptimizerConfig::default()
    }
}

/// Default AdamW settings.
fn adamw() -> AdamWConfig {
    AdamWConfig {
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-10,
        weight_decay: 0.1,
    }
}

/// One config of every model kind, as TOML lines added to a tiny model.
fn kinds() -> Vec<(&'static str, ModelConfig)> {
    let base = "vocab_size = 13\nn_layer = 3\nn_head = 2\nd_model = 16\nblock_size = 8\n";
    [
        ("baseline", ""),
        ("biases, untied", "bias = true\ntied_embeddings = false\n"),
        ("denseformer", "[dwa]\ndilation = 2\nperiod = 1\n"),
        (
            "swiglu rotary rmsnorm",
            "mlp = \"swiglu\"\npositions = \"rotary\"\nnorm = \"rmsnorm\"\n",
        ),
        ("pattention", "mlp = \"pattention\"\nmlp_hidden = 24\n"),
        ("shared", "[sharing]\nblocks = 1\n"),
        (
            "lora, frozen base, head",
            "tied_embeddings = false\n[lora]\nrank = 2\nfreeze_base = true\n\
             targets = [\"attn\", \"mlp\", \"head\"]\n",
        ),
        (
            "modern block",
            "mlp = \"relu2\"\nnorm = \"rmsnorm\"\npositions = \"rotary\"\nqk_norm = true\n\
             tied_embeddings = false\nzero_init_projections = true\nzero_init_head = true\n\
             logit_softcap = 30.0\n",
        ),
        ("value residual", "[depth]\nvalue_residual = true\n"),
        ("laurel-lr", "[depth.laurel]\nkind = \"lr\"\nrank = 2\n"),
        (
            "dynamic mhc",
            "[depth.hyper]\nstreams = 2\ndynamic = true\nmanifold = true\n",
        ),
        ("attention residuals", "[depth]\nattn_res = true\n"),
        ("mudd", "[depth]\nmudd = true\n"),
    ]
    .into_iter()
    .map(|(kind, extra)| (kind, toml::from_str(&format!("{base}{extra}")).unwrap()))
    .collect()
}

#[test]
fn muon_takes_exactly_the_block_matrices_of_every_model_kind() {
    for (kind, config) in kinds() {
        let vs = nn::VarStore::new(Device::Cpu);
        let _model = Gpt::new(&vs.root(), &config).unwrap();
        let vars = vs.variables();
        let opt = Optimizer::new(
            vars.iter()
                .map(|(n, t)| (n.clone(), t.shallow_clone()))
                .collect(),
            &config,
            &muon_settings(),
            adamw(),
            1e-3,
        )
        .unwrap();
        let assigned = opt.assignment();
        assert_eq!(assigned.len(), vars.len(), "{kind}: every variable once");
        for (name, t) in &vars {
            // Told apart by name and shape alone, independently of the schema's roles.
            let block_matrix = name.starts_with("h.") && t.dim() == 2 && !name.contains("lora");
            assert_eq!(assigned[name], block_matrix, "{kind}: {name}");
        }
        assert!(assigned.values().any(|&m| m), "{kind}: Muon has work");
        // The group of each name follows its role, and the six groups cover every role.
        let depth_prefixes = ["dwa.", "vres.", "laurel.", "hyper.", "attnres.", "mudd."];
        for (name, group) in strata_train::optimizer::param_groups(&config) {
            let expected = if name.contains("lora") {
                ParamGroup::Adapter
            } else if name.starts_with("wte") || name.starts_with("wpe") {
                ParamGroup::Embedding
            } else if name.starts_with("lm_head") {
                ParamGroup::Head
            } else if assigned[&name] {
                ParamGroup::Hidden
            } else if depth_prefixes.iter().any(|p| name.starts_with(p)) {
                ParamGroup::Depth
            } else {
                ParamGroup::Scalar
            };
            assert_eq!(group, expected, "{kind}: {name}");
        }
    }
}

#[test]
fn the_default_optimizer_is_the_plain_adamw_bit_for_bit() {
    let config: ModelConfig = toml::from_str(
        "vocab_size = 13\nn_layer = 2\nn_head = 2\nd_model = 16\nblock_size = 8\nbias = true\n",
    )
    .unwrap();
    let make = || {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = strata_tensor::seeded(3, || Gpt::new(&vs.root(), &config).unwrap());
        (vs, model)
    };
    let ((vs_a, model_a), (mut vs_b, model_b)) = (make(), make());
    // Identical starting values whatever other tests draw from libtorch's global generator
    // meanwhile (tests of one binary run concurrently).
    vs_b.copy(&vs_a).unwrap();
    let named =
        |vs: &nn::VarStore| -> Vec<(String, Tensor)> { vs.variables().into_iter().collect() };
    let mut plain = AdamW::new(named(&vs_a), adamw()).unwrap();
    let mut wrapped = Optimizer::new(
        named(&vs_b),
        &config,
        &OptimizerConfig::default(),
        adamw(),
        1e-2,
    )
    .unwrap();
    let x = Tensor::from_slice(&[1i64, 5, 7, 2, 9, 3, 3, 0]).view([1, 8]);
    let y = Tensor::from_slice(&[5i64, 7, 2, 9, 3, 3, 0, 4]).view([1, 8]);
    for step in 0..3 {
        let lr = 1e-2 * (step + 1) as f64 / 3.0;
        plain.zero_grad();
        model_a.loss(&x, &y, true).unwrap().backward();
        let _ = plain.clip_grad_norm(0.5).unwrap();
        plain.step(lr).unwrap();
        wrapped.zero_grad();
        model_b.loss(&x, &y, true).unwrap().backward();
        let _ = wrapped.clip_grad_norm(0.5).unwrap();
        wrapped.step(lr).unwrap();
    }
    let b = vs_b.variables();
    for (name, t) in vs_a.variables() {
        assert!(t.equal(&b[&name]), "{name}");
    }
    let (sa, sb) = (plain.state_tensors(), wrapped.state_tensors());
    assert_eq!(sa.len(), sb.len());
    for ((na, ta), (nb, tb)) in sa.iter().zip(&sb) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{na}");
    }
}

/// Every parameter's gradient of next-token loss on a fixed batch.
fn gradients(vs: &nn::VarStore, model: &Gpt) -> strata_merge::State {
    for (_, mut v) in vs.variables() {
        v.zero_grad();
    }
    let x = Tensor::from_slice(&[1i64, 5, 7, 2, 9, 3, 3, 0, 4, 4, 8, 1]).view([2, 6]);
    let y = Tensor::from_slice(&[5i64, 7, 2, 9, 3, 3, 0, 4, 4, 8, 1, 12]).view([2, 6]);
    model.loss(&x, &y, false).unwrap().backward();
    vs.variables()
        .into_iter()
        .map(|(n, v)| (n, v.grad().detach().copy()))
        .collect()
}

/// A Muon run's optimizer over the variables of `vs`.
fn muon_optimizer(vs: &nn::VarStore, config: &ModelConfig) -> Optimizer {
    Optimizer::new(
        vs.variables().into_iter().collect(),
        config,
        &muon_settings(),
        adamw(),
        1e-3,
    )
    .unwrap()
}

#[test]
fn growth_carries_muons_momentum_like_adamws_first_moment() {
    // As for AdamW's moments (crates/growth/tests/widen.rs): momentum equal to the old
    // gradients must become the grown model's gradients, through the optimizer's own state.
    let config: ModelConfig = toml::from_str(
        "vocab_size = 13\nn_layer = 2\nn_head = 2\nd_model = 16\nblock_size = 8\nbias = true\n\
         mlp = \"relu2\"\nqk_norm = true\ntied_embeddings = false\n",
    )
    .unwrap();
    let source = std::path::Path::new("test");
    for op in [
        GrowthOp::WidenMlp {
            hidden: 80,
            noise: 0.0,
        },
        GrowthOp::AddHeads {
            n_head: 3,
            noise: 0.0,
        },
        GrowthOp::WidenResidual {
            d_model: 32,
            noise: 0.0,
            widen_heads: false,
        },
    ] {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = strata_tensor::seeded(4, || Gpt::new(&vs.root(), &config).unwrap());
        let grads = gradients(&vs, &model);
        let mut opt = muon_optimizer(&vs, &config);
        let moments = Moments {
            exp_avg: grads.iter().map(|(n, g)| (n.clone(), g.copy())).collect(),
            exp_avg_sq: grads.iter().map(|(n, g)| (n.clone(), g.square())).collect(),
        };
        opt.load_moments(&moments, 7, source).unwrap();
        let snapshot = Snapshot {
            config: config.clone(),
            params: strata_merge::state_of(&vs).unwrap(),
            moments: Some(opt.moments().unwrap()),
        };
        let grown = op.apply(&snapshot, 11).unwrap();
        let gvs = nn::VarStore::new(Device::Cpu);
        let gmodel = Gpt::new(&gvs.root(), &grown.config).unwrap();
        let params: Vec<(String, Tensor)> = grown.params.into_iter().collect();
        checkpoint::restore_weights(&gvs, &params, source).unwrap();
        let new_grads = gradients(&gvs, &gmodel);
        let mut gopt = muon_optimizer(&gvs, &grown.config);
        gopt.load_moments(&grown.moments.unwrap(), 7, source)
            .unwrap();
        assert_eq!(gopt.steps_taken(), 7);
        let state: std::collections::HashMap<String, Tensor> =
            gopt.state_tensors().into_iter().collect();
        let mut checked = 0;
        for (name, on_muon) in gopt.assignment() {
            let g = &new_grads[&name];
            let scale = g.abs().max().double_value(&[]).max(1e-6);
            let key = if on_muon {
                format!("muon_momentum.{name}")
            } else {
                format!("exp_avg.{name}")
            };
            let off = (&state[&key] - g).abs().max().double_value(&[]) / scale;
            assert!(off < 1e-4, "{}: `{key}` off by {off:e}", op.label());
            checked += usize::from(on_muon);
        }
        assert!(checked >= 8, "{}: {checked} Muon matrices", op.label());
    }
}

#[test]
fn bad_optimizer_settings_are_refused_naming_the_field() {
    let cases = [
        ("kind = \"muon\"", "train.optimizer.muon_lr"),
        ("kind = \"muon\"\nmuon_lr = 0.0", "train.optimizer.muon_lr"),
        (
            "kind = \"muon\"\nmuon_lr = 0.02\nhead_lr = 0",
            "train.optimizer.head_lr",
        ),
        (
            "kind = \"muon\"\nmuon_lr = 0.02\nscalar_lr = -1",
            "train.optimizer.scalar_lr",
        ),
        (
            "kind = \"muon\"\nmuon_lr = 0.02\nhidden_lr = 0.1",
            "train.optimizer.hidden_lr",
        ),
        ("muon_lr = 0.02", "train.optimizer.muon_lr"),
        ("embedding_lr = nan", "train.optimizer.embedding_lr"),
        (
            "kind = \"muon\"\nmuon_lr = 0.02\nmuon_momentum = 1.0",
            "train.optimizer.muon_momentum",
        ),
        (
            "kind = \"muon\"\nmuon_lr = 0.02\nmuon_ns_steps = 0",
            "train.optimizer.muon_ns_steps",
        ),
        (
            "kind = \"muon\"\nmuon_lr = 0.02\nmuon_weight_decay = -0.1",
            "train.optimizer.muon_weight_decay",
        ),
    ];
    for (section, field) in cases {
        let text = format!("{BASE}[train.optimizer]\n{section}\n");
        let err = RunConfig::parse(&text, "run.toml", "run", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(field) && err.contains("run.toml"),
            "{section}: {err}"
        );
    }
    let text = format!("{BASE}[train.optimizer]\nkind = \"sgd\"\n");
    let err = RunConfig::parse(&text, "run.toml", "run", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("muon"), "{err}");
    // A good section round-trips, and a config without one writes none.
    let text =
        format!("{BASE}[train.optimizer]\nkind = \"muon\"\nmuon_lr = 0.02\nhead_lr = 0.008\n");
    let config = RunConfig::parse(&text, "run.toml", "run", &[]).unwrap();
    assert_eq!(
        config.train.optimizer.group_lr(ParamGroup::Hidden),
        Some(0.02)
    );
    let again = RunConfig::parse(&config.to_toml(), "again.toml", "run", &[]).unwrap();
    assert_eq!(again, config);
    let plain = RunConfig::parse(BASE, "run.toml", "run", &[]).unwrap();
    assert!(!plain.to_toml().contains("optimizer"));
}

#[test]
fn the_memory_budget_counts_the_state_each_optimizer_really_keeps() {
    // Weights and gradients, plus the state tensors the optimizers hold after a step:
    // two AdamW moments per value, one Muon momentum per hidden-matrix value.
    let train = |kind: &str| {
        let section = match kind {
            "muon" => "kind = \"muon\"\nmuon_lr = 0.02\n",
            _ => "kind = \"adamw\"\n",
        };
        let text = format!("{BASE}[train.optimizer]\n{section}");
        RunConfig::parse(&text, "run.toml", "run", &[])
            .unwrap()
            .train
    };
    for (kind, config) in kinds() {
        if config.lora.as_ref().is_some_and(|l| l.freeze_base) {
            continue; // frozen weights keep no state; the estimate stays an upper bound there
        }
        for optimizer in ["adamw", "muon"] {
            let t = train(optimizer);
            let vs = nn::VarStore::new(Device::Cpu);
            let model = Gpt::new(&vs.root(), &config).unwrap();
            let mut opt = Optimizer::new(
                vs.variables().into_iter().collect(),
                &config,
                &t.optimizer,
                adamw(),
                1e-3,
            )
            .unwrap();
            let x = Tensor::from_slice(&[1i64, 2, 3, 4]).view([1, 4]);
            let y = Tensor::from_slice(&[2i64, 3, 4, 5]).view([1, 4]);
            model.loss(&x, &y, false).unwrap().backward();
            opt.step(1e-3).unwrap();
            let values = |ts: Vec<Tensor>| ts.iter().map(|t| t.numel() as f64).sum::<f64>();
            let vars = values(vs.variables().into_values().collect());
            let state = values(
                opt.state_tensors()
                    .into_iter()
                    .filter(|(_, t)| t.kind() == Kind::Float)
                    .map(|(_, t)| t)
                    .collect(),
            );
            let expected = 4.0 * (2.0 * vars + state);
            let estimate = strata_train::budget::model_state_bytes(&config, &t);
            assert_eq!(estimate, expected, "{kind}, {optimizer}");
        }
    }
}

/// How far one optimizer step under `train` moves each parameter of `model_config` from
/// `source`'s weights, with the gradients of [`gradients`] and the schedule's rate at `step`:
/// (name, change, largest absolute weight before), sorted by name.
fn one_step_changes(
    source: &nn::VarStore,
    model_config: &ModelConfig,
    train: &strata_train::TrainConfig,
    step: u64,
) -> Vec<(String, Tensor, f64)> {
    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = Gpt::new(&vs.root(), model_config).unwrap();
    vs.copy(source).unwrap();
    let mut start: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(n, v)| (n, v.detach().copy()))
        .collect();
    start.sort_by(|a, b| a.0.cmp(&b.0));
    let mut opt = Optimizer::new(
        vs.variables().into_iter().collect(),
        model_config,
        &train.optimizer,
        train.adamw(),
        train.learning_rate,
    )
    .unwrap();
    let _ = gradients(&vs, &model);
    opt.step(train.schedule().at(step)).unwrap();
    let now = vs.variables();
    start
        .into_iter()
        .map(|(n, v)| {
            let magnitude = v.abs().max().double_value(&[]);
            let change = &now[&n] - &v;
            (n, change, magnitude)
        })
        .collect()
}

/// Whether `b` is `factor` times `a`, up to 1e-4 relative and the f32 rounding of the weights
/// themselves, which bounds how exactly a small step can be read back as a difference.
fn scaled_by(a: &Tensor, b: &Tensor, factor: f64, magnitude: f64) -> Result<(), String> {
    let expected = a * factor;
    let tolerance =
        1e-4 * expected.abs().max().double_value(&[]) + 4.0 * f64::from(f32::EPSILON) * magnitude;
    let err = (b - &expected).abs().max().double_value(&[]);
    if err <= tolerance {
        Ok(())
    } else {
        Err(format!("off by {err} (tolerance {tolerance})"))
    }
}

/// The tiny modern block with random projections and head, so that every parameter has a
/// gradient at the first step; with `depth`, TOML lines of `[model.depth]`.
fn random_modern_block(depth: &str) -> ModelConfig {
    let (_, mut config) = kinds()
        .into_iter()
        .find(|(kind, _)| *kind == "modern block")
        .unwrap();
    config.zero_init_projections = false;
    config.zero_init_head = false;
    if !depth.is_empty() {
        config.depth = toml::from_str(depth).unwrap();
    }
    config
}

#[test]
fn scaling_the_learning_rates_scales_every_groups_update() {
    // One step from the same weights and gradients: AdamW's first update, its decoupled weight
    // decay and Muon's update are all proportional to the rate, so a config whose rates are
    // scaled by 3 must move every parameter 3 times as far, at any step of the schedule.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let model_config = random_modern_block("");
    for preset in ["modern-cpu.toml", "nanogpt-cpu.toml"] {
        let original = RunConfig::load(&root.join(preset), &[]).unwrap().train;
        let mut scaled = original.clone();
        scaled.scale_learning_rates(3.0);
        for group in ParamGroup::ALL {
            let ratio = scaled.peak_lr(group) / original.peak_lr(group);
            assert!((ratio - 3.0).abs() < 1e-12, "{preset}: {group:?} {ratio}");
        }
        let source = nn::VarStore::new(Device::Cpu);
        let _ = Gpt::new(&source.root(), &model_config).unwrap();
        for step in [10, 700] {
            let base = one_step_changes(&source, &model_config, &original, step);
            let tripled = one_step_changes(&source, &model_config, &scaled, step);
            let mut moving = 0;
            for ((name, a, magnitude), (_, b, _)) in base.iter().zip(&tripled) {
                scaled_by(a, b, 3.0, *magnitude)
                    .unwrap_or_else(|e| panic!("{preset} step {step}: {name} {e}"));
                moving += usize::from(a.abs().max().double_value(&[]) > 0.0);
            }
            assert_eq!(moving, base.len(), "{preset}: every parameter moves");
        }
    }
}

#[test]
fn depth_connections_get_their_own_rate_and_follow_the_scalars_without_one() {
    // The modern preset with value residual and LAuReL-LR: its scalar_lr is 0.01. Without a
    // depth_lr the depth tensors step exactly as before the group existed (at scalar_lr);
    // with depth_lr = 3 x scalar_lr they, and only they, move 3 times as far.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let model_config =
        random_modern_block("value_residual = true\n[laurel]\nkind = \"lr\"\nrank = 2\n");
    let original = RunConfig::load(&root.join("modern-cpu.toml"), &[])
        .unwrap()
        .train;
    let scalar = original.optimizer.scalar_lr.unwrap();
    assert_eq!(original.peak_lr(ParamGroup::Depth), scalar);
    let mut own = original.clone();
    own.optimizer.depth_lr = Some(3.0 * scalar);
    let mut everything_at_scalar = original.clone();
    everything_at_scalar.optimizer.depth_lr = Some(scalar);
    let source = nn::VarStore::new(Device::Cpu);
    let _ = Gpt::new(&source.root(), &model_config).unwrap();
    let groups = strata_train::optimizer::param_groups(&model_config);
    let base = one_step_changes(&source, &model_config, &original, 10);
    let explicit = one_step_changes(&source, &model_config, &everything_at_scalar, 10);
    let tripled = one_step_changes(&source, &model_config, &own, 10);
    let mut depth_tensors = 0;
    for (((name, a, magnitude), (_, same, _)), (_, b, _)) in
        base.iter().zip(&explicit).zip(&tripled)
    {
        assert!(
            a.equal(same),
            "{name}: depth_lr = scalar_lr changes nothing"
        );
        let factor = if groups[name] == ParamGroup::Depth {
            depth_tensors += 1;
            3.0
        } else {
            1.0
        };
        scaled_by(a, b, factor, *magnitude).unwrap_or_else(|e| panic!("{name} x{factor}: {e}"));
    }
    // The value residual's mixes and LAuReL-LR's A and B.
    assert!(depth_tensors >= 4, "{depth_tensors}");
    let bad = RunConfig::parse(
        &std::fs::read_to_string(root.join("modern-cpu.toml")).unwrap(),
        "modern.toml",
        "modern",
        &["train.optimizer.depth_lr=0".into()],
    )
    .unwrap_err()
    .to_string();
    assert!(
        bad.contains("modern.toml") && bad.contains("train.optimizer.depth_lr"),
        "{bad}"
    );
}

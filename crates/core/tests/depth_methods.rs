//! The `[model.depth]` methods (value residual, LAuReL RW and LR, alone and with DWA):
//! identity at init where the paper starts from the baseline, a float64 oracle for the
//! forward pass and every gradient on random weights, causality, FLOPs, config errors.

mod common;

use common::{
    build, copy_weights, laurel, methods, randomise_depth_tensors, tiny, tokens, with_depth,
};
use std::collections::BTreeMap;
use strata_core::schema::{self, Role};
use strata_core::{DepthConfig, DwaConfig, HyperConfig, LaurelKind, ModelConfig};
use strata_tensor::TensorExt;
use tch::{Device, Kind, Tensor, nn};

#[test]
fn laurel_starts_as_the_baseline_bit_for_bit() {
    let idx = tokens(2, 8, 11, 1);
    for (label, config) in methods()
        .into_iter()
        .filter(|(_, c)| c.depth.laurel.is_some() && !c.depth.value_residual)
    {
        let mut base_cfg = config.clone();
        base_cfg.depth = DepthConfig::default();
        let (base_vs, base) = build(&base_cfg, 3);
        let (vs, model) = build(&config, 4);
        copy_weights(&base_vs, &vs);
        let want = tch::no_grad(|| base.forward(&idx, false).unwrap());
        let got = tch::no_grad(|| model.forward(&idx, false).unwrap());
        assert_eq!(got.max_abs_diff(&want).unwrap(), 0.0, "{label} no-grad");
        let got = model.forward(&idx, true).unwrap();
        assert_eq!(got.max_abs_diff(&want).unwrap(), 0.0, "{label} autograd");
    }
}

#[test]
fn hyper_connections_start_as_the_baseline_up_to_the_final_norms_epsilon() {
    // The streams sum to n·x before the final norm; with a negligible ε, LN(n·x) = LN(x).
    let idx = tokens(2, 8, 11, 1);
    let cases = [
        (1, false, false),
        (2, false, false),
        (4, true, false),
        (2, false, true),
        (3, false, true),
        (4, true, true),
    ];
    for (streams, dynamic, manifold) in cases {
        let mut base_cfg = tiny(None);
        base_cfg.norm_eps = Some(1e-12);
        let mut config = base_cfg.clone();
        config.depth.hyper = Some(HyperConfig {
            streams,
            dynamic,
            manifold,
            ..Default::default()
        });
        let (base_vs, base) = build(&base_cfg, 3);
        let (vs, model) = build(&config, 4);
        copy_weights(&base_vs, &vs);
        let want = tch::no_grad(|| base.forward(&idx, false).unwrap());
        let got = tch::no_grad(|| model.forward(&idx, false).unwrap());
        let err = got.max_rel_diff(&want).unwrap();
        assert!(
            err < 1e-5,
            "{streams} streams, dynamic {dynamic}, mHC {manifold}: {err}"
        );
        // The default ε makes a measurable difference: the test above is not vacuous.
        assert!(streams == 1 || got.max_abs_diff(&want).unwrap() > 0.0);
    }
}

#[test]
fn the_value_residual_starts_at_the_papers_mix_and_equals_the_baseline_at_one_zero() {
    let idx = tokens(2, 8, 11, 1);
    for dwa in [false, true] {
        let config = with_depth(
            DepthConfig {
                value_residual: true,
                ..Default::default()
            },
            dwa,
        );
        let mut base_cfg = config.clone();
        base_cfg.depth = DepthConfig::default();
        let (base_vs, base) = build(&base_cfg, 3);
        let (vs, model) = build(&config, 4);
        copy_weights(&base_vs, &vs);
        let mut lambdas = 0;
        for (name, mut t) in vs.variables() {
            if name.starts_with("vres.") {
                assert_eq!(t.to_f64_vec().unwrap(), [0.5, 0.5], "{name} at init");
                tch::no_grad(|| t.copy_(&Tensor::from_slice(&[1.0f32, 0.0])));
                lambdas += 1;
            }
        }
        assert_eq!(
            lambdas,
            config.n_layer - 1,
            "one (λ₁, λ₂) per layer after the first"
        );
        let want = tch::no_grad(|| base.forward(&idx, false).unwrap());
        let got = tch::no_grad(|| model.forward(&idx, false).unwrap());
        assert_eq!(got.max_abs_diff(&want).unwrap(), 0.0, "dwa {dwa}");
    }
}

/// Every variable of `vs` as a float64 leaf that records gradients.
fn leaves(vs: &nn::VarStore) -> BTreeMap<String, Tensor> {
    vs.variables()
        .into_iter()
        .map(|(n, t)| (n, t.to_kind(Kind::Double).detach().set_requires_grad(true)))
        .collect()
}

/// The forward pass written out in float64, independently of `DepthStack`: explicit
/// LayerNorm, per-head masked softmax attention, GELU MLP; the value residual mixes the value
/// columns of `c_attn`'s output with layer 0's; LAuReL uses its paper form
/// `α·f(x) + β·x` or `f(x) + x + B·A·x` with `f(x) = out − x`; a DWA 1x1 after every layer
/// averages the embedding and every (augmented) layer output so far; hyper-connections keep
/// `n` streams in a `Vec`, with explicit loops over streams for read, mix and write (mHC:
/// sigmoids and Sinkhorn-Knopp as explicit divisions); MUDD keeps every output in a `Vec` and
/// sums them per way in loops, feeding each block its query, key and value inputs apart.
fn oracle_logits(w: &BTreeMap<String, Tensor>, cfg: &ModelConfig, idx: &Tensor) -> Tensor {
    let d = cfg.d_model as i64;
    let t = idx.size()[1];
    let norm = |x: &Tensor, g: Option<&Tensor>| {
        let mu = x.mean_dim(-1, true, Kind::Double);
        let var = (x - &mu).square().mean_dim(-1, true, Kind::Double);
        let y = (x - mu) / (var + 1e-5).sqrt();
        match g {
            Some(g) => y * g,
            None => y,
        }
    };
    let pos = Tensor::arange(t, (Kind::Int64, Device::Cpu));
    let embedded = w["wte.weight"]
        .index_select(0, &idx.reshape([-1]))
        .reshape([idx.size()[0], t, d])
        + w["wpe.weight"].index_select(0, &pos);
    let mask = Tensor::ones([t, t], (Kind::Bool, Device::Cpu)).triu(1);
    let first_values: std::cell::RefCell<Option<Tensor>> = Default::default();
    // A block's attention branch with its query, key and value inputs (one stream passes the
    // same tensor three times; MUDD passes its ways); the value residual keeps layer 0's values.
    let attention_ways = |l: usize, xq: &Tensor, xk: &Tensor, xv: &Tensor| -> Tensor {
        let p = |n: &str| &w[&format!("h.{l}.{n}")];
        let project = |x: &Tensor, part: i64| {
            norm(x, Some(p("ln_1.weight")))
                .matmul(&p("attn.c_attn.weight").narrow(0, part * d, d).tr())
        };
        let (queries, keys) = (project(xq, 0), project(xk, 1));
        let mut values = project(xv, 2);
        if cfg.depth.value_residual {
            let mut first = first_values.borrow_mut();
            match first.as_ref() {
                None => *first = Some(values.shallow_clone()),
                Some(v1) => {
                    let lambda = &w[&format!("vres.{l}.lambda")];
                    values = &values * lambda.get(0) + v1 * lambda.get(1);
                }
            }
        }
        let hd = d / cfg.n_head as i64;
        let mut heads = Vec::new();
        for head in 0..cfg.n_head as i64 {
            let q = queries.narrow(2, head * hd, hd);
            let k = keys.narrow(2, head * hd, hd);
            let v = values.narrow(2, head * hd, hd);
            let scores = q.matmul(&k.transpose(1, 2)) / (hd as f64).sqrt();
            let scores = scores.masked_fill(&mask, f64::NEG_INFINITY);
            heads.push(scores.softmax(-1, Kind::Double).matmul(&v));
        }
        Tensor::cat(&heads, -1).matmul(&p("attn.c_proj.weight").tr())
    };
    let attention_branch = |l: usize, x: &Tensor| attention_ways(l, x, x, x);
    // A block's MLP branch on its input.
    let mlp_branch = |l: usize, x: &Tensor| -> Tensor {
        let p = |n: &str| &w[&format!("h.{l}.{n}")];
        let h = norm(x, Some(p("ln_2.weight")));
        let fc = h.matmul(&p("mlp.c_fc.weight").tr());
        let gelu: Tensor = &fc * 0.5 * ((&fc / 2f64.sqrt()).erf() + 1.0);
        gelu.matmul(&p("mlp.c_proj.weight").tr())
    };
    // One block on its input: x + attention, then + MLP.
    let block = |l: usize, x: &Tensor| -> Tensor {
        let mid = x + attention_branch(l, x);
        &mid + mlp_branch(l, &mid)
    };
    let x = if cfg.depth.attn_res {
        // Attention residuals: every sublayer reads Σⱼ softmaxⱼ(w·RMSNorm(vⱼ))·vⱼ over the
        // embedding and the branch outputs so far, written as explicit loops over the values.
        let rms = |v: &Tensor| v / (v.square().mean_dim(-1, true, Kind::Double) + 1e-6).sqrt();
        let vals: Vec<Tensor> = vec![embedded.shallow_clone()];
        let read = |k: usize, vals: &[Tensor]| -> Tensor {
            if k == 0 {
                return vals[0].shallow_clone(); // the first attention reads the embedding
            }
            let w = &w[&format!("attnres.{k}.query")];
            let scores: Vec<Tensor> = vals
                .iter()
                .map(|v| (rms(v) * w).sum_dim_intlist(-1, true, Kind::Double))
                .collect();
            let top = scores
                .iter()
                .fold(scores[0].shallow_clone(), |m, s| m.maximum(s));
            let exps: Vec<Tensor> = scores.iter().map(|s| (s - &top).exp()).collect();
            let total = exps.iter().fold(Tensor::from(0.0), |a, e| a + e);
            vals.iter()
                .zip(&exps)
                .map(|(v, e)| v * e / &total)
                .reduce(|a, b| a + b)
                .unwrap()
        };
        // Block AttnRes: the values read before sublayer k are the embedding and, per block of
        // `block` consecutive outputs that has begun before k, the sum of its outputs so far.
        let block = (2 * cfg.depth.attn_res_block_layers).max(1);
        let values_before = |k: usize, outs: &[Tensor]| -> Vec<Tensor> {
            let mut values = vec![vals[0].shallow_clone()];
            for start in (0..k).step_by(block) {
                let members = &outs[start..k.min(start + block)];
                let sum = members[1..]
                    .iter()
                    .fold(members[0].shallow_clone(), |a, b| a + b);
                values.push(sum);
            }
            values
        };
        let mut outs: Vec<Tensor> = Vec::new();
        for l in 0..cfg.n_layer {
            let input = read(2 * l, &values_before(2 * l, &outs));
            outs.push(attention_branch(l, &input));
            let input = read(2 * l + 1, &values_before(2 * l + 1, &outs));
            outs.push(mlp_branch(l, &input));
        }
        read(2 * cfg.n_layer, &values_before(2 * cfg.n_layer, &outs))
    } else if cfg.depth.mudd {
        // MUDD: after layer l, weights per token (static + up·GELU(down·RMSNorm(newest))) over
        // the embedding and every layer output so far, one weighted sum per way (query, key,
        // value, residual; one way after the last layer), written as loops.
        let rms = |v: &Tensor| v / (v.square().mean_dim(-1, true, Kind::Double) + 1e-6).sqrt();
        let gelu = |x: &Tensor| x * 0.5 * ((x / 2f64.sqrt()).erf() + 1.0);
        let mut outputs = vec![embedded.shallow_clone()];
        let mut ways = vec![embedded.shallow_clone()];
        for l in 0..cfg.n_layer {
            let out = match ways.as_slice() {
                [x] => block(l, x),
                [q, k, v, r] => {
                    let mid = r + attention_ways(l, q, k, v);
                    &mid + mlp_branch(l, &mid)
                }
                _ => unreachable!("MUDD makes one or four ways"),
            };
            let m = |n: &str| &w[&format!("mudd.{l}.{n}")];
            let hidden = gelu(&rms(&out).matmul(&m("down").tr()));
            let dynamic = hidden.matmul(&m("up").tr());
            outputs.push(out);
            let count = if l + 1 == cfg.n_layer { 1 } else { 4 };
            let j = outputs.len();
            ways = (0..count)
                .map(|way| {
                    (0..j)
                        .map(|i| {
                            let at = (way * j + i) as i64;
                            &outputs[i] * (dynamic.narrow(2, at, 1) + m("static").get(at))
                        })
                        .reduce(|a, b| a + b)
                        .unwrap()
                })
                .collect();
        }
        ways.pop().unwrap()
    } else if let Some(hyper) = cfg.depth.hyper {
        let n = hyper.streams;
        let mut streams: Vec<Tensor> = (0..n).map(|_| embedded.copy()).collect();
        for l in 0..cfg.n_layer {
            let q = |name: &str| &w[&format!("hyper.{l}.{name}")];
            let (a, mix, b) = (q("read"), q("mix"), q("write"));
            // Per stream k: read weight [B, T, 1], mixing row [B, T, n], write weight [B, T, 1].
            let mut reads = Vec::new();
            let mut rows = Vec::new();
            let mut writes = Vec::new();
            for (k, h) in streams.iter().enumerate() {
                let k64 = k as i64;
                let mut read = a.get(k64).reshape([1, 1, 1]);
                let mut row = mix.narrow(0, k64 * n as i64, n as i64).reshape([1, 1, -1]);
                let mut write = b.get(k64).reshape([1, 1, 1]);
                if hyper.dynamic {
                    let normed = norm(h, None);
                    let scales = q("scales");
                    let alpha = normed.matmul(&q("dyn_alpha").tr()).tanh() * scales.get(0);
                    let beta = normed.matmul(&q("dyn_beta").tr()).tanh() * scales.get(1);
                    read = &read + alpha.narrow(2, 0, 1);
                    row = &row + alpha.narrow(2, 1, n as i64);
                    write = &write + beta;
                }
                reads.push(read);
                rows.push(row);
                writes.push(write);
            }
            if hyper.manifold {
                // mHC, in the probability domain: σ reads, 2σ writes, and the mixing matrix
                // (entry [k][j] from stream k to stream j) made doubly stochastic by explicit
                // row and column divisions.
                reads = reads.iter().map(|r| r.sigmoid()).collect();
                writes = writes.iter().map(|b| b.sigmoid() * 2.0).collect();
                let mut m: Vec<Vec<Tensor>> = rows
                    .iter()
                    .map(|row| (0..n).map(|j| row.narrow(2, j as i64, 1).exp()).collect())
                    .collect();
                for _ in 0..hyper.sinkhorn_iterations() {
                    for row in m.iter_mut() {
                        let sum = row.iter().fold(Tensor::from(0.0), |acc, v| acc + v);
                        *row = row.iter().map(|v| v / &sum).collect();
                    }
                    for j in 0..n {
                        let sum = (0..n).fold(Tensor::from(0.0), |acc, k| acc + &m[k][j]);
                        for row in m.iter_mut() {
                            row[j] = &row[j] / &sum;
                        }
                    }
                }
                rows = m.iter().map(|row| Tensor::cat(row, 2)).collect();
            }
            let input = (0..n)
                .map(|k| &streams[k] * &reads[k])
                .reduce(|x, y| x + y)
                .unwrap();
            let branch = block(l, &input) - &input;
            streams = (0..n)
                .map(|j| {
                    let carried = (0..n)
                        .map(|k| &streams[k] * rows[k].narrow(2, j as i64, 1))
                        .reduce(|x, y| x + y)
                        .unwrap();
                    carried + &branch * &writes[j]
                })
                .collect();
        }
        streams.into_iter().reduce(|x, y| x + y).unwrap()
    } else {
        let mut x = embedded.shallow_clone();
        let mut outputs = vec![embedded];
        for l in 0..cfg.n_layer {
            let out = block(l, &x);
            let f = &out - &x;
            x = match cfg.depth.laurel.map(|l| l.kind) {
                None => out,
                Some(LaurelKind::Rw) => {
                    let ab = &w[&format!("laurel.{l}.alpha")];
                    f * ab.get(0) + &x * ab.get(1)
                }
                Some(LaurelKind::Lr) => {
                    let a = &w[&format!("laurel.{l}.down")];
                    let b = &w[&format!("laurel.{l}.up")];
                    let low = x.matmul(&a.tr()).matmul(&b.tr());
                    f + &x + low
                }
            };
            if cfg.dwa.is_some() {
                outputs.push(x.shallow_clone());
                let alpha = &w[&format!("dwa.{l}.alpha")];
                x = outputs
                    .iter()
                    .enumerate()
                    .map(|(j, o)| o * alpha.get(j as i64))
                    .reduce(|a, b| a + b)
                    .unwrap();
            }
        }
        x
    };
    norm(&x, Some(&w["ln_f.weight"])).matmul(&w["wte.weight"].tr())
}

/// Mean next-token cross-entropy of float64 logits, written out as logsumexp − target logit.
fn oracle_loss(logits: &Tensor, targets: &Tensor) -> Tensor {
    let v = logits.size()[2];
    let flat = logits.reshape([-1, v]);
    let picked = flat
        .gather(1, &targets.reshape([-1, 1]), false)
        .squeeze_dim(1);
    (flat.logsumexp([1i64].as_slice(), false) - picked).mean(Kind::Double)
}

#[test]
fn every_method_matches_a_float64_oracle_in_logits_and_every_gradient() {
    let idx = tokens(2, 8, 11, 9);
    let targets = tokens(2, 8, 11, 10);
    for (label, config) in methods() {
        let (vs, model) = build(&config, 8);
        randomise_depth_tensors(&vs, 12);
        let w = leaves(&vs);
        let want = oracle_logits(&w, &config, &idx);
        let got = tch::no_grad(|| model.forward(&idx, false).unwrap());
        let err = got.max_rel_diff(&want.detach()).unwrap();
        assert!(err < 1e-5, "{label}: logits relative error {err}");

        oracle_loss(&want, &targets).backward();
        model.loss(&idx, &targets, true).unwrap().backward();
        let vars = vs.variables();
        let mut depth_tensors = 0;
        for spec in schema::schema(&config) {
            let name = spec.name();
            let (mine, oracle) = (vars[&name].grad(), w[&name].grad());
            assert!(
                mine.defined() && oracle.defined(),
                "{label}: {name} gradient"
            );
            // mHC's mixing at layer 0 acts on n identical copies of the embedding, which a
            // doubly stochastic matrix leaves unchanged: its true gradient is 0, and the
            // model's may only be float noise.
            let manifold = config.depth.hyper.is_some_and(|h| h.manifold);
            if manifold && name == "hyper.0.mix" {
                let oracle_size = oracle.abs().max().double_value(&[]);
                let noise = mine.abs().max().double_value(&[]);
                assert!(
                    oracle_size < 1e-12 && noise < 1e-6,
                    "{label}: {name} {noise}"
                );
                continue;
            }
            let err = mine.max_rel_diff(&oracle).unwrap();
            assert!(err < 1e-4, "{label}: {name} gradient relative error {err}");
            if matches!(spec.role, Role::DepthScalar | Role::DepthMatrix) {
                depth_tensors += 1;
                let size = oracle.abs().sum(Kind::Double).double_value(&[]);
                assert!(size > 0.0, "{label}: {name} gets no gradient");
            }
        }
        assert!(depth_tensors > 0, "{label}: no depth-method tensor checked");
    }
}

#[test]
fn changing_a_later_token_never_changes_earlier_logits() {
    for (label, config) in methods() {
        let (vs, model) = build(&config, 5);
        randomise_depth_tensors(&vs, 6);
        let idx = tokens(1, 8, 11, 2);
        let base = tch::no_grad(|| model.forward(&idx, false).unwrap());
        for t in 0..7 {
            let changed = idx.copy();
            let _ = changed
                .get(0)
                .get(t + 1)
                .fill_((idx.int64_value(&[0, t + 1]) + 1) % 11);
            let out = tch::no_grad(|| model.forward(&changed, false).unwrap());
            let earlier = out.narrow(1, 0, t + 1);
            let diff = earlier.max_abs_diff(&base.narrow(1, 0, t + 1)).unwrap();
            assert_eq!(diff, 0.0, "{label}: t={t}");
            let later = out.narrow(1, t + 1, 1);
            assert!(later.max_abs_diff(&base.narrow(1, t + 1, 1)).unwrap() > 1e-6);
        }
    }
}

#[test]
fn flops_count_the_methods_from_their_tensors() {
    let context = 8;
    let base = tiny(None);
    let flops = |c: &ModelConfig| strata_core::flops::forward_flops_per_token(c, context);
    for (label, config) in methods() {
        let mut plain = config.clone();
        plain.depth = DepthConfig::default();
        // Independently: 2 FLOPs per weight of each LAuReL-LR matrix (one product per token);
        // 3 per element of each mix (two products and a sum): (α, β) over D, (λ₁, λ₂) over A.
        let specs = schema::schema(&config);
        let matrices: f64 = specs
            .iter()
            .filter(|s| s.role == Role::DepthMatrix)
            .map(|s| 2.0 * s.numel() as f64)
            .sum();
        let rw_layers = specs
            .iter()
            .filter(|s| s.role == Role::DepthScalar && s.name().starts_with("laurel."))
            .count() as f64;
        let vres_layers = specs
            .iter()
            .filter(|s| s.role == Role::DepthScalar && s.name().starts_with("vres."))
            .count() as f64;
        // A dynamic hyper-connection's matrices act on each of its n streams. Static
        // hyper-connections: 2 FLOPs per element of read (n·D), mix (n²·D) and write (n·D).
        let hyper_layers = specs
            .iter()
            .filter(|s| s.name().starts_with("hyper.") && s.name().ends_with(".mix"))
            .count() as f64;
        let n = config.depth.hyper.map_or(0.0, |h| h.streams as f64);
        let d = config.d_model as f64;
        // Attention residuals: an RMSNorm (3 FLOPs per element) per value (one more value than
        // queries), and per query k = 1, 2, .. a dot product and a weighted sum over the k + 1
        // values so far.
        let queries = specs
            .iter()
            .filter(|s| s.name().starts_with("attnres."))
            .count();
        // Block AttnRes: query k reads the embedding, every block of `block` outputs finished
        // before k and, if k's own block has begun, its partial sum (with a key of its own);
        // each finished block's key is taken once, and summing a block of s outputs takes s - 1
        // adds of D.
        let block = (2 * config.depth.attn_res_block_layers).max(1);
        let attn_res: f64 = if queries == 0 {
            0.0
        } else {
            let blocks: Vec<usize> = (0..queries).step_by(block).collect();
            let finished_by = |k: usize| blocks.iter().filter(|&&b| b + block <= k).count();
            let reads: f64 = (1..=queries)
                .map(|k| {
                    let begun = k % block != 0;
                    let values = 1 + finished_by(k) + usize::from(begun);
                    values as f64 * 2.0 * (2.0 * d) + if begun { 3.0 * d } else { 0.0 }
                })
                .sum();
            3.0 * d * (1 + finished_by(queries)) as f64
                + reads
                + d * (queries - blocks.len()) as f64
        };
        // MUDD: an RMSNorm (3 FLOPs per element) per layer, and per static weight one weighted
        // term over D (its weight MLP's matrices are in `matrices`).
        let mudd_static: Vec<f64> = specs
            .iter()
            .filter(|s| s.name().starts_with("mudd.") && s.name().ends_with(".static"))
            .map(|s| s.numel() as f64)
            .collect();
        let mudd = mudd_static.len() as f64 * 3.0 * d + mudd_static.iter().sum::<f64>() * 2.0 * d;
        let want = matrices * if n > 0.0 { n } else { 1.0 }
            + mudd
            + rw_layers * 3.0 * d
            + vres_layers * 3.0 * config.attn_width() as f64
            + hyper_layers * 2.0 * d * (n * n + 2.0 * n)
            + attn_res;
        assert!(want > 0.0, "{label}");
        assert_eq!(flops(&config) - flops(&plain), want, "{label}");
    }
    assert_eq!(strata_core::flops::depth_flops_per_token(&base), 0.0);
}

#[test]
fn the_depth_section_reads_from_toml_and_old_configs_serialise_unchanged() {
    let text = "vocab_size = 11\nn_layer = 3\nn_head = 4\nd_model = 16\nblock_size = 8\n\
                [dwa]\ndilation = 1\nperiod = 1\n\
                [depth]\nvalue_residual = true\n[depth.laurel]\nkind = \"lr\"\nrank = 4\n";
    let config: ModelConfig = toml::from_str(text).unwrap();
    config.validate("t.toml").unwrap();
    assert!(config.depth.value_residual);
    assert_eq!(config.depth.laurel_rank(), Some(4));
    assert_eq!(
        config.dwa,
        Some(DwaConfig {
            dilation: 1,
            period: 1
        })
    );
    assert_eq!(config.variant_name(), "denseformer-1x1-vres-laurel-lr4");
    let back: ModelConfig = toml::from_str(&toml::to_string(&config).unwrap()).unwrap();
    assert_eq!(back, config);
    // Without the section nothing new is written: old checkpoints' configs stay identical.
    let written = toml::to_string(&tiny(Some((1, 1)))).unwrap();
    assert!(!written.contains("depth"), "{written}");
    assert_eq!(tiny(None).variant_name(), "baseline");
}

/// A change to a model config.
type Edit = Box<dyn Fn(&mut ModelConfig)>;

#[test]
fn bad_depth_settings_are_refused_naming_the_field() {
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "value residual on one layer",
            Box::new(|c| {
                c.n_layer = 1;
                c.depth.value_residual = true;
            }),
            "model.depth.value_residual",
        ),
        (
            "lr without a rank",
            Box::new(|c| c.depth.laurel = laurel(LaurelKind::Lr, None)),
            "model.depth.laurel.rank",
        ),
        (
            "lr rank 0",
            Box::new(|c| c.depth.laurel = laurel(LaurelKind::Lr, Some(0))),
            "model.depth.laurel.rank",
        ),
        (
            "lr rank above d_model",
            Box::new(|c| c.depth.laurel = laurel(LaurelKind::Lr, Some(17))),
            "model.depth.laurel.rank",
        ),
        (
            "rw with a rank",
            Box::new(|c| c.depth.laurel = laurel(LaurelKind::Rw, Some(2))),
            "model.depth.laurel.rank",
        ),
        (
            "no streams",
            Box::new(|c| {
                c.depth.hyper = Some(HyperConfig {
                    streams: 0,
                    ..Default::default()
                })
            }),
            "model.depth.hyper.streams",
        ),
        (
            "Sinkhorn iterations without mHC",
            Box::new(|c| {
                c.depth.hyper = Some(HyperConfig {
                    streams: 2,
                    sinkhorn_iters: 5,
                    ..Default::default()
                })
            }),
            "model.depth.hyper.sinkhorn_iters",
        ),
        (
            "attention residuals with DWA",
            Box::new(|c| {
                c.dwa = Some(DwaConfig {
                    dilation: 1,
                    period: 1,
                });
                c.depth.attn_res = true;
            }),
            "model.depth.attn_res",
        ),
        (
            "attention residuals with hyper-connections",
            Box::new(|c| {
                c.depth.attn_res = true;
                c.depth.hyper = Some(HyperConfig {
                    streams: 2,
                    ..Default::default()
                })
            }),
            "model.depth.attn_res",
        ),
        (
            "attention-residual blocks without attention residuals",
            Box::new(|c| c.depth.attn_res_block_layers = 2),
            "model.depth.attn_res_block_layers",
        ),
        (
            "attention-residual blocks longer than the model",
            Box::new(|c| {
                c.depth.attn_res = true;
                c.depth.attn_res_block_layers = 4;
            }),
            "model.depth.attn_res_block_layers",
        ),
        (
            "MUDD with DWA",
            Box::new(|c| {
                c.dwa = Some(DwaConfig {
                    dilation: 1,
                    period: 1,
                });
                c.depth.mudd = true;
            }),
            "model.depth.mudd",
        ),
        (
            "MUDD with attention residuals",
            Box::new(|c| {
                c.depth.mudd = true;
                c.depth.attn_res = true;
            }),
            "model.depth.mudd",
        ),
        (
            "MUDD with hyper-connections",
            Box::new(|c| {
                c.depth.mudd = true;
                c.depth.hyper = Some(HyperConfig {
                    streams: 2,
                    ..Default::default()
                })
            }),
            "model.depth.mudd",
        ),
        (
            "MUDD with LAuReL",
            Box::new(|c| {
                c.depth.mudd = true;
                c.depth.laurel = laurel(LaurelKind::Rw, None);
            }),
            "model.depth.mudd",
        ),
        (
            "mHC on one stream",
            Box::new(|c| {
                c.depth.hyper = Some(HyperConfig {
                    streams: 1,
                    manifold: true,
                    ..Default::default()
                })
            }),
            "model.depth.hyper.manifold",
        ),
        (
            "hyper-connections with DWA",
            Box::new(|c| {
                c.dwa = Some(DwaConfig {
                    dilation: 1,
                    period: 1,
                });
                c.depth.hyper = Some(HyperConfig {
                    streams: 2,
                    ..Default::default()
                })
            }),
            "model.depth.hyper",
        ),
        (
            "hyper-connections with LAuReL",
            Box::new(|c| {
                c.depth.laurel = laurel(LaurelKind::Rw, None);
                c.depth.hyper = Some(HyperConfig {
                    streams: 2,
                    dynamic: true,
                    ..Default::default()
                })
            }),
            "model.depth.hyper",
        ),
    ];
    for (label, edit, field) in cases {
        let mut c = tiny(None);
        edit(&mut c);
        let err = c.validate("bad.toml").unwrap_err().to_string();
        assert!(
            err.contains(field) && err.contains("bad.toml"),
            "{label}: {err}"
        );
        let vs = nn::VarStore::new(Device::Cpu);
        let err = strata_core::Gpt::new(&vs.root(), &c)
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{label} (Gpt::new): {err}");
    }
    for (text, field) in [
        ("[depth]\nstreams = 2\n", "streams"),
        ("[depth.hyper]\ndynamic = true\n", "streams"),
        ("[depth.laurel]\nkind = \"xx\"\n", "xx"),
        ("[depth.laurel]\nrank = 2\n", "kind"),
    ] {
        let text = format!(
            "vocab_size = 11\nn_layer = 3\nn_head = 4\nd_model = 16\nblock_size = 8\n{text}"
        );
        let err = toml::from_str::<ModelConfig>(&text)
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{text}: {err}");
    }
}

#[test]
fn a_plain_depth_stack_refuses_a_value_residual_its_layers_cannot_take() {
    let vs = nn::VarStore::new(Device::Cpu);
    let depth = DepthConfig {
        value_residual: true,
        ..Default::default()
    };
    let anchor = Tensor::zeros([4], (Kind::Float, Device::Cpu));
    let stack =
        strata_core::DepthStack::with_methods(&vs.root(), 3, 8, None, &depth, &anchor).unwrap();
    let x = Tensor::zeros([2, 8], (Kind::Float, Device::Cpu));
    let err = stack.forward(x, |_, x| Ok(x + 1)).unwrap_err().to_string();
    assert!(err.contains("forward_mixing"), "{err}");
}

#[test]
fn sinkhorn_makes_a_doubly_stochastic_matrix_and_keeps_one_that_is() {
    // Random logits with token axes: every row and column sums to 1 after the iterations.
    let logits = strata_tensor::seeded(3, || {
        Tensor::randn([4, 2, 3, 4], (Kind::Double, Device::Cpu)) * 2.0
    });
    let m = strata_core::hyper::sinkhorn(&logits, 200).unwrap();
    let rows = m.sum_dim_intlist([-1i64].as_slice(), false, Kind::Double);
    let cols = m.sum_dim_intlist([0i64].as_slice(), false, Kind::Double);
    let row_err = (rows - 1.0).abs().max().double_value(&[]);
    assert!(row_err < 1e-6, "rows are {row_err} from 1");
    // The last normalisation is over columns: they sum to 1 up to rounding.
    assert!((cols - 1.0).abs().max().double_value(&[]) < 1e-12);
    assert!(m.min().double_value(&[]) > 0.0);
    // A matrix that is already doubly stochastic (uniform) stays as it is.
    let uniform = Tensor::zeros([3, 3], (Kind::Double, Device::Cpu));
    let u = strata_core::hyper::sinkhorn(&uniform, 5).unwrap();
    assert!((u - 1.0 / 3.0).abs().max().double_value(&[]) < 1e-15);
}

#[test]
fn attention_residuals_start_as_the_baseline_up_to_the_norms_epsilon() {
    // Zero queries average the values: the baseline's stream over their count, which every
    // pre-norm and the final norm remove (up to ε, made negligible here).
    let idx = tokens(2, 8, 11, 1);
    let mut base_cfg = tiny(None);
    base_cfg.norm_eps = Some(1e-12);
    let mut config = base_cfg.clone();
    config.depth.attn_res = true;
    let (base_vs, base) = build(&base_cfg, 3);
    let want = tch::no_grad(|| base.forward(&idx, false).unwrap());
    // Full (a value per sublayer) and Block AttnRes (blocks of 1 and 2 of the 3 layers).
    for block_layers in [2, 1, 0] {
        config.depth.attn_res_block_layers = block_layers;
        let (vs, model) = build(&config, 4);
        copy_weights(&base_vs, &vs);
        let got = tch::no_grad(|| model.forward(&idx, false).unwrap());
        let err = got.max_rel_diff(&want).unwrap();
        assert!(err < 1e-5, "{block_layers} layers per block: {err}");
        assert!(
            got.max_abs_diff(&want).unwrap() > 0.0,
            "the stream is not the baseline's"
        );
    }
    let (vs, _) = build(&config, 4);
    // The plain depth loop refuses a stack with attention residuals.
    let stack = strata_core::DepthStack::with_methods(
        &vs.root(),
        3,
        16,
        None,
        &config.depth,
        &Tensor::zeros([1], (Kind::Float, Device::Cpu)),
    )
    .unwrap();
    let err = stack
        .forward(
            Tensor::zeros([1, 16], (Kind::Float, Device::Cpu)),
            |_, x| Ok(x.copy()),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("forward_sublayers"), "{err}");
}

#[test]
fn mudd_starts_as_the_baseline_up_to_rounding() {
    // One-hot static weights and a zero `up` make every way the newest output; only the
    // query, key and value projections, run as three products, round differently.
    let idx = tokens(2, 8, 11, 1);
    let base_cfg = tiny(None);
    let mut config = base_cfg.clone();
    config.depth.mudd = true;
    let (base_vs, base) = build(&base_cfg, 3);
    let (vs, model) = build(&config, 4);
    copy_weights(&base_vs, &vs);
    let want = tch::no_grad(|| base.forward(&idx, false).unwrap());
    let got = tch::no_grad(|| model.forward(&idx, false).unwrap());
    let err = got.max_rel_diff(&want).unwrap();
    assert!(err < 1e-5, "no-grad: {err}");
    let got = model.forward(&idx, true).unwrap();
    let err = got.max_rel_diff(&want).unwrap();
    assert!(err < 1e-5, "autograd: {err}");
    // Every connection's static weights are one-hot on the newest output, per way.
    for layer in 0..config.n_layer {
        let ways = strata_core::mudd::ways(layer, config.n_layer);
        let j = layer + 2;
        let weights = vs.variables()[&format!("mudd.{layer}.static")]
            .to_f64_vec()
            .unwrap();
        let want: Vec<f64> = (0..ways * j)
            .map(|k| f64::from(u8::from(k % j == j - 1)))
            .collect();
        assert_eq!(weights, want, "layer {layer}");
    }
    // The plain depth loop refuses a stack with MUDD, and MUDD's loop a stack without it.
    let anchor = Tensor::zeros([1], (Kind::Float, Device::Cpu));
    let stack =
        strata_core::DepthStack::with_methods(&vs.root(), 3, 16, None, &config.depth, &anchor)
            .unwrap();
    let x = Tensor::zeros([1, 16], (Kind::Float, Device::Cpu));
    let err = stack
        .forward(x.copy(), |_, x| Ok(x.copy()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("forward_multiway"), "{err}");
    let plain = strata_core::DepthStack::new(vs.root() / "plain", 3, None).unwrap();
    let err = plain
        .forward_multiway(x, |_, _, _| {
            Ok(Tensor::zeros([1, 16], (Kind::Float, Device::Cpu)))
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.depth.mudd"), "{err}");
}

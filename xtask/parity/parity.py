"""Reference parity of strata's models, run by `cargo xtask test`.

Trains three tiny strata models for a few steps on the embedded Tiny Shakespeare (nanoGPT's
recipe shape; a GPT-2 shape with biases, tanh GELU and an untied head; a DenseFormer with
dilation 2), then checks that independent implementations compute what strata computes:

  (a) nanoGPT's model definition (reference_models.NanoGpt) loading strata's checkpoint;
  (b) Hugging Face transformers' GPT2LMHeadModel and PreTrainedTokenizerFast loading
      `strata export --format hf-gpt2`;
  (c) a DenseFormer written from the paper (reference_models.DenseFormer).

Each loses on the batches `strata eval --save-batches` wrote within 1e-5 of `strata eval
--json`'s train loss, and continues a prompt greedily to the same tokens as `strata sample
--temperature 0 --json`. A model GPT-2 cannot express is refused by the hf-gpt2 export.

Usage: python parity.py STRATA_BINARY WORK_FOLDER   (exit status 0 when every check holds)
"""
import json
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_models import DenseFormer, NanoGpt  # noqa: E402

LOSS_TOLERANCE = 1e-5
PROMPT = "ROMEO:"
NEW_TOKENS = 20
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TINY = [
    "model.n_layer=3",
    "model.n_head=2",
    "model.d_model=32",
    "model.block_size=32",
    "train.batch_size=8",
    "train.max_iters=150",
    "train.warmup_iters=5",
    "train.lr_decay_iters=150",
    "train.eval_interval=150",
    "train.eval_iters=2",
    "train.log_interval=50",
    "train.learning_rate=1e-2",
]
VARIANTS = {
    "nanogpt": ("configs/nanogpt-cpu.toml", []),
    "gpt2": (
        "configs/nanogpt-cpu.toml",
        ["model.bias=true", 'model.mlp="gelu_tanh"', "model.tied_embeddings=false"],
    ),
    "denseformer": ("configs/denseformer-cpu.toml", ["model.dwa.dilation=2"]),
}

failures = []


def strata(binary, *args):
    """Runs the strata binary; returns stdout, failing the harness on a non-zero exit."""
    done = subprocess.run([binary, *args], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"strata {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def check(what, ok, detail):
    print(f"{'ok  ' if ok else 'FAIL'} {what}: {detail}")
    if not ok:
        failures.append(what)


def latest_checkpoint(run):
    name = open(os.path.join(run, "checkpoints", "LATEST")).read().strip()
    return os.path.join(run, "checkpoints", name)


def batch_loss(logits_of, batches):
    """Mean over batches of each batch's mean cross-entropy, as strata evaluates."""
    losses = []
    with torch.no_grad():
        for x, y in zip(batches["x"], batches["y"]):
            logits = logits_of(x)
            losses.append(F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1)).item())
    return sum(losses) / len(losses)


def greedy(logits_of, ids, block_size):
    """Greedy continuation by NEW_TOKENS tokens, the context cropped to block_size."""
    ids = list(ids)
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            context = torch.tensor([ids[-block_size:]])
            ids.append(int(logits_of(context)[0, -1].argmax()))
    return ids


def compare(name, label, logits_of, reference, block_size):
    loss = batch_loss(logits_of, reference["batches"])
    diff = abs(loss - reference["loss"])
    check(f"{name} {label} loss", diff <= LOSS_TOLERANCE,
          f"{loss:.7f} vs strata {reference['loss']:.7f} (|diff| {diff:.1e}, tolerance {LOSS_TOLERANCE:.0e})")
    ids = greedy(logits_of, reference["sample"]["prompt_ids"], block_size)
    check(f"{name} {label} greedy continuation", ids == reference["sample"]["ids"],
          f"{len(ids) - len(reference['sample']['prompt_ids'])} tokens"
          + ("" if ids == reference["sample"]["ids"] else f": {ids} vs strata {reference['sample']['ids']}"))


def main():
    binary, work = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    os.makedirs(work, exist_ok=True)
    torch.manual_seed(0)
    start = time.time()
    references = {}
    for name, (config, extra) in VARIANTS.items():
        run = os.path.join(work, name)
        sets = [a for s in TINY + extra for a in ("--set", s)]
        strata(binary, "train", "--config", config, "--out", run, "--overwrite", "--quiet", *sets)
        batches_file = os.path.join(work, f"{name}-batches.safetensors")
        report = json.loads(strata(binary, "eval", run, "--json", "--device", "cpu",
                                   "--save-batches", batches_file))
        sample = json.loads(strata(binary, "sample", run, "--prompt", PROMPT, "--tokens",
                                   str(NEW_TOKENS), "--temperature", "0", "--json", "--device", "cpu"))
        checkpoint = latest_checkpoint(run)
        meta = json.load(open(os.path.join(checkpoint, "meta.json")))["meta"]
        references[name] = dict(
            run=run, loss=report["train_loss"], batches=load_file(batches_file), sample=sample,
            tensors=load_file(os.path.join(checkpoint, "model.safetensors")),
            model=meta["config"]["model"],
        )

    # (a) nanoGPT's model definition on strata's own checkpoint.
    ref = references["nanogpt"]
    m = ref["model"]
    cfg = dict(vocab_size=m["vocab_size"], n_layer=m["n_layer"], n_head=m["n_head"],
               d_model=m["d_model"], block_size=m["block_size"], bias=m["bias"],
               eps=1e-5, mlp_hidden=4 * m["d_model"])
    nanogpt = NanoGpt(cfg).eval()
    nanogpt.load_strata(ref["tensors"])
    compare("nanogpt", "nanoGPT definition", nanogpt, ref, cfg["block_size"])

    # (b) transformers' GPT2LMHeadModel on the hf-gpt2 export.
    from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast
    for name in ("nanogpt", "gpt2"):
        ref = references[name]
        out = os.path.join(work, f"{name}-hf")
        strata(binary, "export", ref["run"], "--format", "hf-gpt2", out, "--overwrite")
        hf = GPT2LMHeadModel.from_pretrained(out, attn_implementation="eager").eval()
        compare(name, "transformers GPT2LMHeadModel", lambda x: hf(x).logits, ref, ref["model"]["block_size"])
        tokenizer = PreTrainedTokenizerFast.from_pretrained(out)
        encoded = tokenizer.encode(PROMPT)
        check(f"{name} transformers tokenizer encode", encoded == ref["sample"]["prompt_ids"],
              f"{encoded} vs strata {ref['sample']['prompt_ids']}")
        decoded = tokenizer.decode(ref["sample"]["ids"])
        check(f"{name} transformers tokenizer decode", decoded == ref["sample"]["text"], repr(decoded))

    # (c) DenseFormer from the paper on strata's checkpoint.
    ref = references["denseformer"]
    m = ref["model"]
    cfg = dict(vocab_size=m["vocab_size"], n_layer=m["n_layer"], n_head=m["n_head"],
               d_model=m["d_model"], block_size=m["block_size"], bias=m["bias"],
               eps=1e-5, mlp_hidden=4 * m["d_model"])
    dense = DenseFormer(cfg, m["dwa"]["dilation"], m["dwa"]["period"]).eval()
    dense.load_strata(ref["tensors"])
    compare("denseformer", "paper DenseFormer", dense, ref, cfg["block_size"])
    refused = subprocess.run([binary, "export", ref["run"], "--format", "hf-gpt2",
                              os.path.join(work, "denseformer-hf")], cwd=REPO, capture_output=True, text=True)
    check("denseformer hf-gpt2 export refused", refused.returncode != 0 and "model.dwa" in refused.stderr,
          refused.stderr.strip().splitlines()[-1] if refused.stderr.strip() else "no message")

    print(f"parity: {len(failures)} failed, {time.time() - start:.0f} s")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

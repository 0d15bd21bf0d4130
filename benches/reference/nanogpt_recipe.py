"""Same-machine PyTorch baseline for strata's `configs/nanogpt-cpu.toml`.

An independent, plain-PyTorch (eager, CPU) implementation of nanoGPT's CPU recipe for Tiny
Shakespeare: char-level, 4 layers, 4 heads, width 128, block 64, batch 12, 2000 iterations,
AdamW (lr 1e-3, betas 0.9/0.99, weight decay 0.1 on matrices), warmup 100 then cosine to
1e-4, grad clip 1.0, no dropout, GPT-2 init, tied embeddings, LayerNorm without bias, exact
GELU, `scaled_dot_product_attention`; evaluation every 250 iterations on 20 random batches of
each split, as nanoGPT does. `cargo xtask bench` runs it next to strata and records both.

With --bf16 the forward passes run under `torch.autocast("cpu", dtype=torch.bfloat16)`
(f32 weights and optimizer state; the loss in f32), to set beside strata's
`model.precision = "bf16_autocast"`.

Usage: python nanogpt_recipe.py CORPUS [--iters N] [--seed S] [--bf16]  -> prints one JSON line.
"""
import argparse, json, math, resource, time

import torch
import torch.nn as nn
import torch.nn.functional as F

start = time.time()
ap = argparse.ArgumentParser()
ap.add_argument("corpus")
ap.add_argument("--iters", type=int, default=2000)
ap.add_argument("--seed", type=int, default=1337)
ap.add_argument("--final-eval-batches", type=int, default=0,
                help="also report the final losses over this many random batches per split")
ap.add_argument("--bf16", action="store_true",
                help="forward passes under torch.autocast(cpu, bfloat16)")
args = ap.parse_args()
torch.manual_seed(args.seed)

text = open(args.corpus, encoding="utf-8").read()
chars = sorted(set(text))
index = {c: i for i, c in enumerate(chars)}
data = torch.tensor([index[c] for c in text], dtype=torch.long)
cut = int(0.9 * len(data))
splits = {"train": data[:cut], "val": data[cut:]}
B, T, L, H, D, V = 12, 64, 4, 4, 128, len(chars)
LR, MIN_LR, WARMUP = 1e-3, 1e-4, 100


def batch(split):
    d = splits[split]
    ix = torch.randint(len(d) - T, (B,))
    return torch.stack([d[i:i + T] for i in ix]), torch.stack([d[i + 1:i + 1 + T] for i in ix])


class Norm(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(D))

    def forward(self, x):
        return F.layer_norm(x, (D,), self.weight, None, 1e-5)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1, self.ln_2 = Norm(), Norm()
        self.qkv = nn.Linear(D, 3 * D, bias=False)
        self.attn_out = nn.Linear(D, D, bias=False)
        self.fc = nn.Linear(D, 4 * D, bias=False)
        self.mlp_out = nn.Linear(4 * D, D, bias=False)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(D, dim=2)
        q, k, v = (z.view(b, t, H, D // H).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_out(y.transpose(1, 2).contiguous().view(b, t, D))
        return x + self.mlp_out(F.gelu(self.fc(self.ln_2(x))))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, D), nn.Embedding(T, D)
        self.blocks = nn.ModuleList(Block() for _ in range(L))
        self.ln_f = Norm()
        self.head = nn.Linear(D, V, bias=False)
        self.wte.weight = self.head.weight
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)
        for name, p in self.named_parameters():
            if name.endswith("attn_out.weight") or name.endswith("mlp_out.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * L))

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits.float().view(-1, V), targets.view(-1))


model = Model()
decay = [p for p in model.parameters() if p.dim() >= 2]
no_decay = [p for p in model.parameters() if p.dim() < 2]
opt = torch.optim.AdamW(
    [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
    lr=LR, betas=(0.9, 0.99))


def lr_at(it):
    if it < WARMUP:
        return LR * (it + 1) / (WARMUP + 1)
    ratio = (it - WARMUP) / (args.iters - WARMUP)
    return MIN_LR + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (LR - MIN_LR)


def autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16)


@torch.no_grad()
def estimate(batches=20):
    model.eval()
    with autocast():
        out = {s: torch.stack([model(*batch(s)) for _ in range(batches)]).mean().item()
               for s in splits}
    model.train()
    return out


step_time, evals = 0.0, []
for it in range(args.iters + 1):
    for group in opt.param_groups:
        group["lr"] = lr_at(it)
    if it % 250 == 0 or it == args.iters:
        evals.append({"step": it, **estimate()})
    if it == args.iters:
        break
    t0 = time.time()
    x, y = batch("train")
    with autocast():
        loss = model(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    step_time += time.time() - t0

large = estimate(args.final_eval_batches) if args.final_eval_batches > 0 else None
print(json.dumps({
    "implementation": "pytorch-eager reference" + (" (bf16 autocast)" if args.bf16 else ""),
    "torch": torch.__version__,
    "threads": torch.get_num_threads(),
    "iters": args.iters,
    "final_val_loss": evals[-1]["val"],
    "final_train_loss": evals[-1]["train"],
    "wall_s": time.time() - start,
    "ms_per_iter": 1000.0 * step_time / args.iters,
    "tokens_per_sec": args.iters * B * T / step_time,
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    "evals": evals,
    "final_large_eval": large,
}))

"""Reference models written independently of strata, for the parity harness (parity.py).

`NanoGpt` follows nanoGPT's model definition (Karpathy, model.py): learned positions,
pre-norm blocks of LayerNorm, causal self-attention with a fused query/key/value projection
and an exact-GELU MLP, a final LayerNorm and a head tied to the token embedding; its tensor
names are nanoGPT's (`transformer.h.0.attn.c_attn.weight`, ...), which strata's checkpoint
names equal without the `transformer.` prefix.

`DenseFormer` is the same model with DenseFormer's depth-weighted averages written from the
paper (Pagliardini et al. 2024, "DenseFormer: Enhancing Information Flow in Transformers via
Depth Weighted Averaging"): with x_0 the embedded input and x_{i+1} the output of block i,
the input of block i+1 (and of the final norm after the last block) is
sum_j alpha_{i,j} x_j over j <= i+1 with (i+1-j) divisible by the dilation k, for the blocks
i with (i+1) divisible by the period p; elsewhere the block's raw output is passed on.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (nanoGPT's)."""

    def __init__(self, width, bias, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width)) if bias else None
        self.eps = eps

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class SelfAttention(nn.Module):
    """Causal self-attention with one fused projection for queries, keys and values."""

    def __init__(self, width, heads, bias):
        super().__init__()
        self.c_attn = nn.Linear(width, 3 * width, bias=bias)
        self.c_proj = nn.Linear(width, width, bias=bias)
        self.heads = heads

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        shape = lambda z: z.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        q, k, v = shape(q), shape(k), shape(v)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))
        mask = torch.ones(t, t, dtype=torch.bool).tril()
        scores = scores.masked_fill(~mask, float("-inf"))
        y = scores.softmax(dim=-1) @ v
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))


class Mlp(nn.Module):
    """Two projections around an exact GELU."""

    def __init__(self, width, hidden, bias):
        super().__init__()
        self.c_fc = nn.Linear(width, hidden, bias=bias)
        self.c_proj = nn.Linear(hidden, width, bias=bias)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, cfg):
        super().__init__()
        self.ln_1 = LayerNorm(cfg["d_model"], cfg["bias"], cfg["eps"])
        self.attn = SelfAttention(cfg["d_model"], cfg["n_head"], cfg["bias"])
        self.ln_2 = LayerNorm(cfg["d_model"], cfg["bias"], cfg["eps"])
        self.mlp = Mlp(cfg["d_model"], cfg["mlp_hidden"], cfg["bias"])

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NanoGpt(nn.Module):
    """nanoGPT's GPT: token and position embeddings, blocks, final norm, tied head."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg["vocab_size"], cfg["d_model"]),
                wpe=nn.Embedding(cfg["block_size"], cfg["d_model"]),
                h=nn.ModuleList([Block(cfg) for _ in range(cfg["n_layer"])]),
                ln_f=LayerNorm(cfg["d_model"], cfg["bias"], cfg["eps"]),
            )
        )

    def embed(self, idx):
        pos = torch.arange(idx.size(1))
        return self.transformer.wte(idx) + self.transformer.wpe(pos)

    def body(self, x):
        for block in self.transformer.h:
            x = block(x)
        return x

    def forward(self, idx):
        x = self.transformer.ln_f(self.body(self.embed(idx)))
        return x @ self.transformer.wte.weight.t()

    def load_strata(self, tensors):
        """Loads strata's tensors (names without `transformer.`); every tensor must fit."""
        state = {}
        for name, value in tensors.items():
            state[name if name.startswith("dwa.") else "transformer." + name] = value
        self.load_state_dict(state, strict=True)


class DenseFormer(NanoGpt):
    """NanoGpt with depth-weighted averages after every `period`-th block."""

    def __init__(self, cfg, dilation, period):
        super().__init__(cfg)
        self.dilation, self.period = dilation, period
        self.dwa = nn.ModuleDict()
        for i in range(cfg["n_layer"]):
            if (i + 1) % period == 0:
                count = len(range((i + 1) % dilation, i + 2, dilation))
                module = nn.Module()
                module.alpha = nn.Parameter(torch.zeros(count))
                self.dwa[str(i)] = module

    def body(self, x):
        outputs = [x]
        for i, block in enumerate(self.transformer.h):
            outputs.append(block(x))
            if str(i) in self.dwa:
                chosen = outputs[(i + 1) % self.dilation :: self.dilation]
                alpha = self.dwa[str(i)].alpha
                x = sum(a * o for a, o in zip(alpha, chosen))
            else:
                x = outputs[-1]
        return x

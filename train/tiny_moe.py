"""Train a small DeepSeek-V3-shaped MoE (llama.cpp's `deepseek2`) on real text, write it as BF16 GGUF.

Runs where torch and a GPU are (the device machine; `bench/gpu_sweep.sh` calls it): qpatch's
tests never import it. The forward pass is llama.cpp's deepseek2 graph
(src/models/deepseek2.cpp at the default pin), written out in torch:

- RMSNorm x / sqrt(mean(x^2) + eps) * w; rope of the "normal" kind (adjacent pairs), on the last
  qk_rope dims of q and on the one shared k_pe; kq_scale 1/sqrt(qk_nope + qk_rope);
- MLA: q = q_b(norm(q_a x)); [c, k_pe] = kv_a_mqa x; c = norm(c); k_nope, v = kv_b(c) per head
  (exported as attn_k_b / attn_v_b exactly as convert_hf_to_gguf.py splits kv_b_proj);
- a leading dense SwiGLU block, then MoE blocks: sigmoid router, top-k chosen on
  probs + exp_probs_b, weights = the chosen probs normalised and scaled by 2.5, plus one shared
  expert. The selection bias is trained as DeepSeek-V3 does (no gradient: nudged toward balance).

Text: what train/corpus.py prepared (the Python standard library's source, tokenized by the
pin's llama-tokenize, two packages held out). Deterministic: fixed seed. The sequence layout is
llama-perplexity's: BOS in position 0 of every chunk.

    python train/corpus.py --tree llama.cpp --tokenize llama.cpp/build-cpu/bin/llama-tokenize --out out/corpus
    python train/tiny_moe.py --tree llama.cpp --data out/corpus --out out/tiny     # where torch and a GPU are
"""

from __future__ import annotations

import argparse
import json
import lzma
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tool"))
from qpatch.gguf import tiny_model  # noqa: E402

# The shapes trained here (the rest: tiny_model.spec's defaults). "small": the 75 M model of docs/quality.md
# (6 blocks, 16 routed experts, 4 used). "large": DeepSeek-V3's proportions at 435 M parameters
# (16 blocks, 64 routed experts, 6 used; routed experts are 87 % of the weights, DeepSeek-V3's are 96 %).
SIZES = {
    "small": dict(n_layer=6, n_embd=512, n_ff=1536, n_head=8),
    "large": dict(n_layer=16, n_embd=512, n_ff=1536, n_head=8, n_expert=64, n_expert_used=6, n_ff_exp=256),
}


class Cfg:
    def __init__(self, spec):
        self.V, self.d, self.L, self.lead = spec.n_vocab, spec.n_embd, spec.n_layer, spec.leading_dense
        self.H, self.nope, self.rope = spec.n_head, spec.head_k_mla - spec.qk_rope, spec.qk_rope
        self.v = spec.head_v_mla
        self.q_lora, self.kv_lora = spec.q_lora, spec.kv_lora
        self.ff, self.ff_exp, self.shared = spec.n_ff, spec.n_ff_exp, spec.shared_experts
        self.E, self.k = spec.n_expert, spec.n_expert_used
        self.eps, self.base, self.scale = tiny_model.RMS_EPS, tiny_model.ROPE_BASE, tiny_model.WEIGHTS_SCALE


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.w, self.eps = nn.Parameter(torch.ones(n)), eps

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.w.to(x.dtype)


def rope(x, pos, base):
    """ggml's normal rope: pairs (x[2i], x[2i+1]) rotated by pos * base^(-2i/n)."""
    n = x.shape[-1]
    inv = base ** (-torch.arange(0, n, 2, device=x.device, dtype=torch.float32) / n)
    ang = pos[:, None].float() * inv[None, :]  # (T, n/2)
    while ang.dim() < x.dim() - 1:
        ang = ang.unsqueeze(1)
    cos, sin = ang.cos(), ang.sin()
    xf = x.float()
    x0, x1 = xf[..., 0::2], xf[..., 1::2]
    out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)
    return out.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, c: Cfg):
        super().__init__()
        self.c = c
        self.q_a = nn.Linear(c.d, c.q_lora, bias=False)
        self.q_a_norm = RMSNorm(c.q_lora, c.eps)
        self.q_b = nn.Linear(c.q_lora, c.H * (c.nope + c.rope), bias=False)
        self.kv_a = nn.Linear(c.d, c.kv_lora + c.rope, bias=False)
        self.kv_a_norm = RMSNorm(c.kv_lora, c.eps)
        self.kv_b = nn.Linear(c.kv_lora, c.H * (c.nope + c.v), bias=False)
        self.o = nn.Linear(c.H * c.v, c.d, bias=False)

    def forward(self, x, pos):  # x: (B, T, d)
        c = self.c
        B, T, _ = x.shape
        q = self.q_b(self.q_a_norm(self.q_a(x))).view(B, T, c.H, c.nope + c.rope)
        q_nope, q_pe = q[..., :c.nope], rope(q[..., c.nope:], pos, c.base)
        kv = self.kv_a(x)
        lat, k_pe = self.kv_a_norm(kv[..., :c.kv_lora]), rope(kv[..., c.kv_lora:].unsqueeze(2), pos, c.base)
        kvb = self.kv_b(lat).view(B, T, c.H, c.nope + c.v)
        k_nope, v = kvb[..., :c.nope], kvb[..., c.nope:]
        qh = torch.cat([q_nope, q_pe], -1).transpose(1, 2)
        kh = torch.cat([k_nope, k_pe.expand(B, T, c.H, c.rope)], -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(qh, kh, v.transpose(1, 2), is_causal=True,
                                             scale=1.0 / math.sqrt(c.nope + c.rope))
        return self.o(out.transpose(1, 2).reshape(B, T, c.H * c.v))


class SwiGLU(nn.Module):
    def __init__(self, d, ff):
        super().__init__()
        self.gate, self.up = nn.Linear(d, ff, bias=False), nn.Linear(d, ff, bias=False)
        self.down = nn.Linear(ff, d, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


class MoE(nn.Module):
    def __init__(self, c: Cfg):
        super().__init__()
        self.c = c
        self.router = nn.Linear(c.d, c.E, bias=False)
        self.register_buffer("bias", torch.zeros(c.E))
        s = 1 / math.sqrt(c.d)
        self.gate = nn.Parameter(torch.randn(c.E, c.ff_exp, c.d) * s)
        self.up = nn.Parameter(torch.randn(c.E, c.ff_exp, c.d) * s)
        self.down = nn.Parameter(torch.randn(c.E, c.d, c.ff_exp) / math.sqrt(c.ff_exp))
        self.shared = SwiGLU(c.d, c.ff_exp * c.shared)
        self.load = torch.zeros(c.E)

    def forward(self, x):
        c = self.c
        shp = x.shape
        x2 = x.reshape(-1, c.d)
        probs = torch.sigmoid(self.router(x2).float())
        sel = torch.topk(probs + self.bias, c.k, dim=-1).indices
        w = probs.gather(-1, sel)
        w = w / w.sum(-1, keepdim=True).clamp(min=6.103515625e-5) * c.scale
        out = expert_mix(x2, sel, w, self.gate, self.up, self.down)
        if self.training:  # stays on the GPU: the balancing step reads it there
            self.load = torch.bincount(sel.flatten(), minlength=c.E).float().detach()
        return (out + self.shared(x2)).view(shp)


def expert_mix(x, sel, w, gate, up, down, pad_limit=2.0):
    """sum_j w[n, j] * expert_{sel[n, j]}(x[n]) for every token n, with one host sync.

    The (token, slot) pairs are sorted by expert. Where padding every expert to the busiest one's
    count costs at most pad_limit times the work, all experts run as three batched matmuls;
    otherwise (a skewed router, early in training) one matmul triple per expert over its slice."""
    n_tok, k = sel.shape
    n_exp = gate.shape[0]
    flat = sel.reshape(-1)
    order = torch.argsort(flat, stable=True)
    e_sorted = flat[order]
    tok = order // k
    counts = torch.bincount(flat, minlength=n_exp)
    xs = x[tok]
    cap = int(counts.max())  # the one host sync
    if cap * n_exp <= pad_limit * flat.numel():
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(flat.numel(), device=x.device) - starts[e_sorted]
        buf = xs.new_zeros(n_exp, cap, x.shape[1])
        buf[e_sorted, rank] = xs
        h = F.silu(torch.bmm(buf, gate.transpose(1, 2))) * torch.bmm(buf, up.transpose(1, 2))
        ys = torch.bmm(h, down.transpose(1, 2))[e_sorted, rank]
    else:
        parts = []
        for e, xe in enumerate(torch.split(xs, counts.tolist())):
            if xe.shape[0]:
                parts.append(F.linear(F.silu(F.linear(xe, gate[e])) * F.linear(xe, up[e]), down[e]))
        ys = torch.cat(parts)
    ys = ys.to(x.dtype) * w.reshape(-1)[order, None].to(x.dtype)
    return torch.zeros_like(x).index_add_(0, tok, ys)


def expert_mix_reference(x, sel, w, gate, up, down):
    """The same sum, one expert at a time (the obvious form; `check_expert_mix` compares the two)."""
    out = torch.zeros_like(x)
    for e in range(gate.shape[0]):
        tok, slot = (sel == e).nonzero(as_tuple=True)
        if tok.numel():
            h = x[tok]
            y = F.linear(F.silu(F.linear(h, gate[e])) * F.linear(h, up[e]), down[e])
            out.index_add_(0, tok, (y * w[tok, slot, None]).to(out.dtype))
    return out


def check_expert_mix(device) -> None:
    """Both paths of expert_mix, on balanced and on skewed routing, against the reference: values and gradients."""
    g = torch.Generator().manual_seed(0)
    n, d, ff, n_exp, k = 64, 16, 8, 8, 3
    for skew in (False, True):
        x = torch.randn(n, d, generator=g).to(device)
        logits = torch.randn(n, n_exp, generator=g) + (torch.arange(n_exp) == 0) * 10.0 * skew
        sel = torch.topk(logits, k, dim=-1).indices.to(device)
        w = torch.rand(n, k, generator=g).to(device)
        ws = [(torch.randn(n_exp, *s, generator=g) * 0.3).to(device).requires_grad_()
              for s in ((ff, d), (ff, d), (d, ff))]
        b = expert_mix_reference(x, sel, w, *ws)
        gb = torch.autograd.grad(b.square().sum(), ws)
        for pad_limit in (float("inf"), 0.0):  # batched, then per expert
            a = expert_mix(x, sel, w, *ws, pad_limit=pad_limit)
            ga = torch.autograd.grad(a.square().sum(), ws)
            for u, v in zip((a, *ga), (b, *gb)):
                if not torch.allclose(u, v, atol=1e-4, rtol=1e-4):
                    raise SystemExit(f"expert_mix differs from the reference (skewed={skew}, pad_limit={pad_limit}): "
                                     f"max |diff| {(u - v).abs().max().item():.3g}")
    print("expert_mix: both paths equal the per-expert reference (values and gradients)", flush=True)


class Block(nn.Module):
    def __init__(self, c: Cfg, dense: bool):
        super().__init__()
        self.attn_norm, self.attn = RMSNorm(c.d, c.eps), Attention(c)
        self.ffn_norm = RMSNorm(c.d, c.eps)
        self.ffn = SwiGLU(c.d, c.ff) if dense else MoE(c)

    def forward(self, x, pos):
        x = x + self.attn(self.attn_norm(x), pos)
        return x + self.ffn(self.ffn_norm(x))


class Model(nn.Module):
    def __init__(self, c: Cfg):
        super().__init__()
        self.c = c
        self.embd = nn.Embedding(c.V, c.d)
        self.blocks = nn.ModuleList(Block(c, i < c.lead) for i in range(c.L))
        self.norm = RMSNorm(c.d, c.eps)
        self.out = nn.Linear(c.d, c.V, bias=False)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, ids):
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.embd(ids)
        for b in self.blocks:
            x = b(x, pos)
        return self.out(self.norm(x))

    def gguf_weights(self) -> dict[str, np.ndarray]:
        """Every tensor under its GGUF name, float32, numpy order (the reverse of ggml's ne)."""
        c = self.c

        def n(t):
            return t.detach().float().cpu().numpy()

        w = {"token_embd.weight": n(self.embd.weight), "output_norm.weight": n(self.norm.w),
             "output.weight": n(self.out.weight)}
        for i, b in enumerate(self.blocks):
            p, a = f"blk.{i}.", b.attn
            kv_b = n(a.kv_b.weight).reshape(c.H, c.nope + c.v, c.kv_lora)
            w.update({
                p + "attn_norm.weight": n(b.attn_norm.w), p + "ffn_norm.weight": n(b.ffn_norm.w),
                p + "attn_q_a.weight": n(a.q_a.weight), p + "attn_q_a_norm.weight": n(a.q_a_norm.w),
                p + "attn_q_b.weight": n(a.q_b.weight), p + "attn_kv_a_mqa.weight": n(a.kv_a.weight),
                p + "attn_kv_a_norm.weight": n(a.kv_a_norm.w),
                # (H, kv_lora, nope)
                p + "attn_k_b.weight": np.ascontiguousarray(kv_b[:, :c.nope, :].transpose(0, 2, 1)),
                p + "attn_v_b.weight": np.ascontiguousarray(kv_b[:, c.nope:, :]),  # (H, v, kv_lora)
                p + "attn_output.weight": n(a.o.weight),
            })
            f = b.ffn
            if isinstance(f, SwiGLU):
                w.update({p + "ffn_gate.weight": n(f.gate.weight), p + "ffn_up.weight": n(f.up.weight),
                          p + "ffn_down.weight": n(f.down.weight)})
            else:
                w.update({p + "ffn_gate_inp.weight": n(f.router.weight), p + "exp_probs_b.bias": n(f.bias),
                          p + "ffn_gate_exps.weight": n(f.gate), p + "ffn_up_exps.weight": n(f.up),
                          p + "ffn_down_exps.weight": n(f.down),
                          p + "ffn_gate_shexp.weight": n(f.shared.gate.weight),
                          p + "ffn_up_shexp.weight": n(f.shared.up.weight),
                          p + "ffn_down_shexp.weight": n(f.shared.down.weight)})
        return w


def read_tokens(path: Path) -> np.ndarray:
    """uint16 token ids from PATH, or from PATH.xz (how the device call carries the training text: 3.3 MB, not 16)."""
    if not path.exists() and path.with_name(path.name + ".xz").exists():
        with lzma.open(path.with_name(path.name + ".xz")) as f:
            return np.frombuffer(f.read(), dtype=np.uint16).astype(np.int64)
    return np.fromfile(path, dtype=np.uint16).astype(np.int64)


def batches(tokens: np.ndarray, bos: int, seq: int, batch: int, gen: torch.Generator, device):
    t = torch.from_numpy(tokens)
    while True:
        starts = torch.randint(0, len(t) - seq - 1, (batch,), generator=gen)
        x = torch.stack([t[s: s + seq + 1] for s in starts])
        x[:, 0] = bos  # llama-perplexity's chunks start with BOS
        yield x[:, :-1].to(device, non_blocking=True), x[:, 1:].to(device, non_blocking=True)


@torch.no_grad()
def perplexity_like_llama(model, tokens: np.ndarray, bos: int, ctx: int, chunks: int, device) -> float:
    """PPL as llama-perplexity computes it: chunk i = tokens[i*ctx:(i+1)*ctx] with BOS first, scored on
    the second half (positions ctx/2 .. ctx-2 predicting the next token)."""
    model.eval()
    nll, count = 0.0, 0
    n = min(chunks, len(tokens) // ctx)
    for i in range(n):
        x = torch.from_numpy(tokens[i * ctx:(i + 1) * ctx].copy()).to(device)[None]
        x[0, 0] = bos
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(x).float()
        first = ctx // 2
        lp = F.log_softmax(logits[0, first:ctx - 1], -1)
        nll -= lp.gather(-1, x[0, first + 1:ctx, None]).sum().item()
        count += ctx - 1 - first
    model.train()
    return math.exp(nll / count)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    t = ap
    t.add_argument("--tree", type=Path, required=True, help="the pin's llama.cpp tree (for its vocabulary)")
    t.add_argument("--data", type=Path, required=True, help="what train/corpus.py wrote")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--seconds", type=float, default=150, help="training time budget")
    t.add_argument("--seq", type=int, default=512)
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--seed", type=int, default=1234)
    t.add_argument("--size", choices=sorted(SIZES), default="small", help="the model's shape (SIZES)")
    train(ap.parse_args(argv))


def train(a):
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    vocab = a.tree / tiny_model.VOCAB
    train_ids = read_tokens(a.data / "train.bin")
    held_ids = np.fromfile(a.data / "heldout.bin", dtype=np.uint16).astype(np.int64)
    bos = int(held_ids[0])
    n_vocab, _ = tiny_model.vocabulary(vocab)
    shape = SIZES[a.size]
    spec = tiny_model.spec(n_vocab, **shape)
    c = Cfg(spec)
    a.out.mkdir(parents=True, exist_ok=True)
    print(f"corpus: {len(train_ids)} train tokens, {len(held_ids)} held-out tokens", flush=True)
    check_expert_mix(device)
    model = Model(c).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    routed = sum(p.numel() for b in model.blocks if isinstance(b.ffn, MoE) for p in (b.ffn.gate, b.ffn.up, b.ffn.down))
    print(f"model ({a.size}): {n_params / 1e6:.1f} M parameters, {c.E} experts ({c.k} used), {c.L} blocks; "
          f"routed experts {100 * routed / n_params:.1f} % of the weights", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.1)
    gen = torch.Generator().manual_seed(a.seed)
    it = batches(train_ids, bos, a.seq, a.batch, gen, device)
    step, t_start, warm = 0, time.time(), 100
    log = []
    while time.time() - t_start < a.seconds:
        frac = min(1.0, (time.time() - t_start) / a.seconds)
        lr = a.lr * min(1.0, (step + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = next(it)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(x)
        loss = F.cross_entropy(logits.float().view(-1, c.V), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():  # DeepSeek-V3's auxiliary-loss-free balancing: nudge the selection bias
            for b in model.blocks:
                if isinstance(b.ffn, MoE):
                    load = b.ffn.load
                    b.ffn.bias += 1e-3 * torch.sign(load.mean() - load)
        if step % 100 == 0:
            print(f"step {step:5d}  loss {loss.item():.4f}  lr {lr:.2e}  {time.time() - t_start:6.1f} s", flush=True)
            log.append((step, round(loss.item(), 4)))
        step += 1
    train_s = time.time() - t_start
    tokens_seen = step * a.batch * a.seq
    ppl = perplexity_like_llama(model, held_ids, bos, a.seq, 64, device)
    print(f"trained {step} steps ({tokens_seen / 1e6:.1f} M tokens) in {train_s:.0f} s; "
          f"torch held-out PPL (ctx {a.seq}, 64 chunks, llama-perplexity's scoring) {ppl:.4f}", flush=True)
    path = tiny_model.write(a.out / "tiny-deepseek-bf16.gguf", vocab, weights=model.gguf_weights(), n_ctx_train=a.seq,
                            **shape)
    meta = {"params": n_params, "steps": step, "tokens": tokens_seen, "train_s": round(train_s, 1),
            "torch_heldout_ppl": ppl, "seed": a.seed, "size": a.size, "model": shape,
            "routed_fraction": round(routed / n_params, 4), "loss_log": log,
            "train_tokens": int(len(train_ids)), "heldout_tokens": int(len(held_ids)), "gguf": str(path)}
    (a.out / "train.json").write_text(json.dumps(meta, indent=1))
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)", flush=True)


if __name__ == "__main__":
    main()

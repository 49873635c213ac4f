#!/usr/bin/env python3
"""Plot bench/fit_evidence.py's results.json: size against held-out mean KLD, stock and shipped policies
at six ftypes against the fitted mixes (exact and greedy). Usage: fit_plot.py results.json out.png [TITLE]"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src: str, dst: str, title: str = "75 M DeepSeek-shaped MoE") -> int:
    res = json.load(open(src))
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    marks = {"stock": "o", "n-expert-fix": "s", "ffn-down-bump": "^", "deepseek-v3": "D"}
    for pol, m in marks.items():
        qs = sorted((q for q in res["quants"] if q["policy"] == pol and not q["same_as"]), key=lambda q: q["bytes"])
        if qs:
            ax.plot([q["bytes"] / 2**20 for q in qs], [q["kld"] for q in qs], m, ls=":", label=pol, alpha=0.8)
    for kind, style in (("fit", dict(color="black", marker="*", ms=11, ls="-")),
                        ("greedy", dict(color="tab:gray", marker="x", ms=7, ls="--"))):
        fs = sorted((f for f in res["fits"] if f["name"].startswith(kind)), key=lambda f: f["bytes"])
        ax.errorbar([f["bytes"] / 2**20 for f in fs], [f["kld"] for f in fs], yerr=[f["kld_unc"] for f in fs],
                    label="qpatch fit (exact)" if kind == "fit" else "greedy ΔKLD/byte", **style)
    ax.set_yscale("log")
    ax.set_xlabel("size (MiB of tensor data)")
    ax.set_ylabel("mean KLD vs BF16, held-out text")
    ax.set_title(f"{title}: fitted mixes vs stock and shipped policies")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(dst)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))

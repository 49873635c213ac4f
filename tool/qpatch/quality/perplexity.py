"""Run the pin's own `llama-perplexity` and read what it prints.

Two runs, as quant makers do by hand: the base model once with `--kl-divergence-base FILE`
(it writes the tokens and every position's log-probabilities to FILE and prints the PPL), then
each quant with `--kl-divergence` against FILE (it prints PPL(Q), the ratio to the base, the
KLD distribution and top-token agreement). The numbers are parsed from the final statistics
blocks of tools/perplexity/perplexity.cpp; a run that prints no such block failed, whatever its
exit status (llama-perplexity returns 0 after some of its own errors).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from qpatch.errors import EvalError
from qpatch.progress import SILENT, Progress

_NUM = r"(-?[\d.]+(?:e[-+]?\d+)?|nan|-?inf)"
_FINAL_PPL = re.compile(rf"Final estimate: PPL = {_NUM} \+/- {_NUM}")
_STAT = {  # KldStats field -> (the label perplexity.cpp prints, the pattern of its line)
    "ppl": ("Mean PPL(Q)", rf"^Mean PPL\(Q\)\s*:\s*{_NUM}\s*±\s*{_NUM}"),
    "ppl_base": ("Mean PPL(base)", rf"^Mean PPL\(base\)\s*:\s*{_NUM}\s*±\s*{_NUM}"),
    "ln_ppl_ratio": ("Mean ln(PPL(Q)/PPL(base))", rf"^Mean ln\(PPL\(Q\)/PPL\(base\)\)\s*:\s*{_NUM}\s*±\s*{_NUM}"),
    "ppl_ratio": ("Mean PPL(Q)/PPL(base)", rf"^Mean PPL\(Q\)/PPL\(base\)\s*:\s*{_NUM}\s*±\s*{_NUM}"),
    "kld_mean": ("Mean KLD", rf"^Mean\s+KLD:\s*{_NUM}\s*±\s*{_NUM}"),
    "kld_max": ("Maximum KLD", rf"^Maximum KLD:\s*{_NUM}"),
    "kld_p99": ("99.0% KLD", rf"^99\.0%\s+KLD:\s*{_NUM}"),
    "kld_median": ("Median KLD", rf"^Median\s+KLD:\s*{_NUM}"),
    "rms_dp": ("RMS Δp", rf"^RMS Δp\s*:\s*{_NUM}\s*±\s*{_NUM} %"),
    "same_top": ("Same top p", rf"^Same top p:\s*{_NUM}\s*±\s*{_NUM} %"),
}
_STAT_RE = {k: re.compile(rx, re.M) for k, (_, rx) in _STAT.items()}
_CHUNKS = re.compile(r"(?:computing|calculating perplexity) over (\d+) chunks")
_BASE_STEP = re.compile(r"\[(\d+)\]-?[\d.]+(?:e[-+]?\d+)?,")
_KLD_STEP = re.compile(r"^\s*(\d+)\s+-?[\d.]+ ± ", re.M)
_LOAD_FAILED = re.compile(r"failed to load model|unable to load model")
_LOAD_REASON = re.compile(r"error loading model: (.*)")
_ERROR_LINE = re.compile(r"(error|failed|unable|not enough|you need at least|inconsistent)", re.I)


@dataclass(frozen=True)
class KldStats:
    """One quant against the base: what llama-perplexity --kl-divergence prints at the end."""

    ppl: float
    ppl_unc: float
    ppl_base: float
    ppl_ratio: float
    ln_ppl_ratio: float
    kld_mean: float
    kld_unc: float
    kld_median: float
    kld_p99: float
    kld_max: float
    same_top: float  # % of positions whose most likely token is the base's
    same_top_unc: float
    rms_dp: float  # RMS of the change in the probability of the right token, %

    def as_dict(self) -> dict:
        return asdict(self)


def parse_base(text: str, log: Path | None = None) -> tuple[float, float]:
    """(PPL, its uncertainty) from a base run's `Final estimate` line."""
    m = _FINAL_PPL.search(text)
    if not m:
        raise EvalError(f"llama-perplexity printed no final PPL{_where(log)}\n{_tail(text)}")
    return float(m.group(1)), float(m.group(2))


def parse_kld(text: str, log: Path | None = None) -> KldStats:
    """The statistics blocks of a `--kl-divergence` run."""
    got = {}
    for key, rx in _STAT_RE.items():
        m = rx.search(text)
        if not m:
            hint = (" (it prints statistics only for 100 or more scored tokens: use more text or a larger --ctx)"
                    if "KL Divergence" in text else "")
            raise EvalError(f"llama-perplexity printed no '{_STAT[key][0]}' line{hint}{_where(log)}\n{_tail(text)}")
        got[key] = tuple(float(g) for g in m.groups())
    return KldStats(
        ppl=got["ppl"][0], ppl_unc=got["ppl"][1], ppl_base=got["ppl_base"][0], ppl_ratio=got["ppl_ratio"][0],
        ln_ppl_ratio=got["ln_ppl_ratio"][0], kld_mean=got["kld_mean"][0], kld_unc=got["kld_mean"][1],
        kld_median=got["kld_median"][0], kld_p99=got["kld_p99"][0], kld_max=got["kld_max"][0],
        same_top=got["same_top"][0], same_top_unc=got["same_top"][1], rms_dp=got["rms_dp"][0])


def run(binary: Path, args: list[str], log: Path, *, label: str, model: str | os.PathLike,
        progress: Progress = SILENT) -> str:
    """Run llama-perplexity with `args`, keep its whole output in `log`, report chunks done; returns the output.

    Output is read as it comes (the base run prints `[1]ppl,[2]ppl,...` on one line), so the bar moves
    per chunk, not at the end."""
    cmd = [str(binary), *args]
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as e:
        raise EvalError(f"cannot run {binary}: {e}") from e
    assert proc.stdout is not None
    buf = bytearray()
    total = done = 0
    with open(log, "wb") as lf:
        lf.write((" ".join(cmd) + "\n").encode())
        update = None
        with _bar_ctx(progress, label) as bar:
            while True:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                lf.write(chunk)
                buf += chunk
                text = buf.decode("utf-8", "replace")
                if not total and (m := _CHUNKS.search(text)):
                    total = int(m.group(1))
                    update = bar(total)
                if update:
                    steps = [int(s) for s in _BASE_STEP.findall(text)] + [int(s) for s in _KLD_STEP.findall(text)]
                    if steps and max(steps) > done:
                        done = max(steps)
                        update(done)
        rc = proc.wait()
    text = buf.decode("utf-8", "replace")
    if _LOAD_FAILED.search(text):
        m = _LOAD_REASON.search(text)
        raise EvalError(f"this checkout's llama-perplexity could not load {model}"
                        f"{': ' + m.group(1).strip() if m else ''}{_where(log)}",
                        hint="was it made by another llama.cpp (ik_llama.cpp types, a newer pin), or edited?")
    if rc != 0:
        raise EvalError(f"llama-perplexity exited with {rc}{_where(log)}\n{_tail(text)}")
    return text


class _bar_ctx:
    """Opens the progress bar lazily, once the chunk count is known."""

    def __init__(self, progress: Progress, label: str):
        self.progress, self.label = progress, label
        self.cm: Any = None

    def __enter__(self):
        def open_bar(total: int):
            self.cm = self.progress.bar(self.label, total)
            return self.cm.__enter__()
        return open_bar

    def __exit__(self, *exc):
        if self.cm is not None:
            self.cm.__exit__(*exc)
        return False


def version(binary: Path) -> str:
    """`llama-perplexity --version`'s line (build number and commit): part of every cache key."""
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise EvalError(f"cannot run {binary}: {e}") from e
    for line in (out.stdout + out.stderr).splitlines():
        if line.startswith("version:"):
            return line.strip()
    raise EvalError(f"{binary} --version printed no version line")


def _where(log: Path | None) -> str:
    return f"; log: {log}" if log else ""


def _tail(text: str, n: int = 6) -> str:
    """The lines that say what went wrong (errors first), else the last lines."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if _ERROR_LINE.search(ln)]
    return "\n".join((errors or lines)[-n:])

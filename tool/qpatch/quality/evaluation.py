"""`qpatch eval`: quality per bit of quantized models against their unquantized base.

The base model's log-probabilities are computed once per (model content, text content,
settings, llama-perplexity version) and cached under `<cache>/kld/`; each quant is then run
with `--kl-divergence` against them. Sizes, bits per weight and what made each quant (ftype;
policy and pin when qpatch made it, from the `qpatch.*` keys `qpatch quantize` writes) are read
from the GGUF headers, never from file names.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from qpatch.build import cmake
from qpatch.cache import cache_root
from qpatch.errors import EvalError, ModelError
from qpatch.gguf.catalogue import T, all_ftypes, tensor_bytes
from qpatch.gguf.header import read_model_headers
from qpatch.progress import SILENT, Progress
from qpatch.quality import perplexity
from qpatch.quality.content import content_hash, text_hash

TOOL = "llama-perplexity"


@dataclass(frozen=True)
class Settings:
    """What llama-perplexity is run with; every field is part of the base-logits cache key."""

    ctx: int = 512
    chunks: int | None = None  # None: all the text holds
    backend: str = "cpu"
    threads: int | None = None  # not in the key: results do not depend on it

    def args(self) -> list[str]:
        a = ["-c", str(self.ctx), "-t", str(self.threads or os.cpu_count() or 1)]
        if self.chunks:
            a += ["--chunks", str(self.chunks)]
        a += ["-ngl", "999"] if self.backend == "cuda" else ["-ngl", "0"]
        return a

    def key(self) -> dict:
        return {"ctx": self.ctx, "chunks": self.chunks, "backend": self.backend}


@dataclass(frozen=True)
class ModelInfo:
    """A GGUF model as its header describes it."""

    path: str
    arch: str
    size_bytes: int  # tensor data, all shards
    params: int
    ftype: str
    policy: str  # qpatch.policy, or "-" for a file qpatch did not make
    pin: str
    shapes: tuple[tuple[str, tuple[int, ...]], ...] = field(repr=False, compare=False)

    @property
    def bpw(self) -> float:
        return 8 * self.size_bytes / self.params if self.params else 0.0

    @property
    def size_mib(self) -> float:
        return self.size_bytes / 2**20


def model_info(path: str | os.PathLike) -> ModelInfo:
    headers = read_model_headers(path)
    first = headers[0]
    size = params = 0
    shapes = []
    for h in headers:
        for t in h.tensors:
            n = 1
            for d in t.shape:
                n *= d
            params += n
            size += tensor_bytes(T(int(t.type)), t.shape)
            shapes.append((t.name, tuple(t.shape)))
    ft = first.kv.get("general.file_type")
    by_id = {f.id: f.name for f in all_ftypes() if not f.copy}
    ftype = by_id.get(int(ft), str(ft)) if ft is not None else "-"
    return ModelInfo(str(path), str(first.kv.get("general.architecture", "?")), size, params, ftype,
                     str(first.kv.get("qpatch.policy", "-")), str(first.kv.get("qpatch.pin", "-")),
                     tuple(sorted(shapes)))


def check_same_model(base: ModelInfo, quant: ModelInfo):
    """A quant of `base` has its architecture and every tensor, with the same shape."""
    if base.arch != quant.arch:
        raise EvalError(f"{quant.path} is a {quant.arch} model, the base {base.path} a {base.arch} model: "
                        "not a quantization of it")
    b, q = dict(base.shapes), dict(quant.shapes)
    if b != q:
        only_b, only_q = sorted(set(b) - set(q)), sorted(set(q) - set(b))
        shape = sorted(n for n in set(b) & set(q) if b[n] != q[n])
        what = (f"{len(only_b)} tensor(s) only in the base (e.g. {only_b[0]})" if only_b else
                f"{len(only_q)} tensor(s) only in the quant (e.g. {only_q[0]})" if only_q else
                f"{shape[0]} is {list(q[shape[0]])} in the quant, {list(b[shape[0]])} in the base")
        raise EvalError(f"{quant.path} is not a quantization of {base.path}: {what}")


@dataclass(frozen=True)
class Row:
    model: ModelInfo
    stats: perplexity.KldStats

    def as_dict(self) -> dict:
        m = self.model
        return {"path": m.path, "policy": m.policy, "ftype": m.ftype, "pin": m.pin, "size_bytes": m.size_bytes,
                "params": m.params, "bpw": round(m.bpw, 4), **self.stats.as_dict()}


@dataclass(frozen=True)
class Base:
    """The base model's run: its PPL and the logits file every quant is compared with."""

    model: ModelInfo
    ppl: float
    ppl_unc: float
    logits: Path
    cached: bool


@dataclass(frozen=True)
class Report:
    base: Base
    text: str
    settings: Settings
    version: str
    rows: tuple[Row, ...]

    def as_dict(self) -> dict:
        b = self.base.model
        return {"base": {"path": b.path, "size_bytes": b.size_bytes, "params": b.params, "bpw": round(b.bpw, 4),
                         "ftype": b.ftype, "ppl": self.base.ppl, "ppl_unc": self.base.ppl_unc},
                "text": self.text, "settings": self.settings.key(), "llama_perplexity": self.version,
                "quants": [r.as_dict() for r in self.rows]}


class Evaluator:
    """One checkout's llama-perplexity, built (incrementally) on first use, and the base logits cache."""

    def __init__(self, checkout: str | os.PathLike, settings: Settings, *, progress: Progress = SILENT,
                 cache_dir: Path | None = None, build_tool: bool = True):
        self.checkout = Path(checkout)
        self.settings = settings
        self.progress = progress
        self.cache_dir = cache_dir or cache_root() / "kld"
        if settings.backend == "cuda" and not cmake.detect_gpu_archs():
            raise EvalError("--backend cuda needs an NVIDIA GPU and none was found (nvidia-smi lists none)",
                            hint="evaluate on the CPU (--backend cpu), or run on a machine with a GPU")
        if build_tool:
            progress.note(f"building {TOOL} ({settings.backend}, incremental)")
            cmake.build(self.checkout, settings.backend, targets=[TOOL], progress=progress)
        self.binary = cmake.binary(self.checkout, settings.backend, TOOL)
        if not self.binary.exists():
            raise EvalError(f"{self.binary} does not exist",
                            hint=f"build it: qpatch build --{settings.backend} --target {TOOL}")
        self.version = perplexity.version(self.binary)
        self.identity = _identity(self.checkout, self.version)

    def base(self, model: str | os.PathLike, text: str | os.PathLike) -> Base:
        info = model_info(model)
        text = _check_text(text)
        key = hashlib.sha256(json.dumps({"model": content_hash(model), "text": text_hash(text),
                                         **self.settings.key(), "tool": self.identity},
                                        sort_keys=True).encode()).hexdigest()[:24]
        logits, meta = self.cache_dir / f"{key}.kld", self.cache_dir / f"{key}.json"
        if logits.exists() and meta.exists():
            m = json.loads(meta.read_text())
            self.progress.note(f"base logits cached: {logits}")
            return Base(info, m["ppl"], m["ppl_unc"], logits, True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = logits.with_suffix(".kld.tmp")
        out = perplexity.run(self.binary, ["-m", str(model), "-f", str(text), "--kl-divergence-base", str(tmp),
                                           *self.settings.args()],
                             self.cache_dir / f"{key}.log", label=f"base {Path(model).name}", model=model,
                             progress=self.progress)
        ppl, unc = perplexity.parse_base(out, self.cache_dir / f"{key}.log")
        os.replace(tmp, logits)
        meta.write_text(json.dumps({"ppl": ppl, "ppl_unc": unc, "model": str(model), "text": str(text)}, indent=1))
        return Base(info, ppl, unc, logits, False)

    def quant(self, base: Base, quant: str | os.PathLike, log_dir: Path) -> Row:
        info = model_info(quant)
        check_same_model(base.model, info)
        log = log_dir / f"{Path(quant).name}.kld.log"
        out = perplexity.run(self.binary, ["-m", str(quant), "--kl-divergence-base", str(base.logits),
                                           "--kl-divergence", *self.settings.args()],
                             log, label=f"KLD {Path(quant).name}", model=quant, progress=self.progress)
        return Row(info, perplexity.parse_kld(out, log))


def _identity(checkout: Path, version: str) -> str:
    """What the logits depend on: the pin, for a qpatch checkout. Not the version line: its commit is
    the checkout's HEAD, which every `qpatch apply` moves while the inference code stays the same."""
    from qpatch.checkout.repo import Checkout
    from qpatch.errors import QpatchError

    try:
        return f"pin {Checkout(checkout).pin_name}"
    except QpatchError:
        return version


def _check_text(text) -> Path:
    p = Path(text)
    if not p.is_file():
        raise EvalError(f"text file {text} does not exist",
                        hint="pass --text FILE: held-out text the model did not train on")
    if p.stat().st_size == 0:
        raise EvalError(f"text file {text} is empty")
    return p


def evaluate(base: str | os.PathLike, quants, text: str | os.PathLike, *, checkout, settings: Settings = Settings(),
             progress: Progress = SILENT, log_dir: Path | None = None) -> Report:
    """Base once (cached), then every quant; raises on the first failure (sweep keeps going instead)."""
    if not quants:
        raise EvalError("no quantized model to evaluate")
    _check_text(text)
    try:
        infos = [model_info(q) for q in quants]
        b_info = model_info(base)
    except ModelError as e:
        raise EvalError(str(e)) from e
    for i in infos:  # before any run: a wrong file should not cost a base run
        check_same_model(b_info, i)
    ev = Evaluator(checkout, settings, progress=progress)
    b = ev.base(base, text)
    log_dir = log_dir or Path(quants[0]).resolve().parent
    rows = tuple(ev.quant(b, q, log_dir) for q in quants)
    return Report(b, str(text), settings, ev.version, rows)


"""Upstream's own oracle: reproduce llama.cpp 0c1e57098's quant-type snapshots from qpatch's Python model.

`tests/test-quant-type-selection.cpp` in the pin's source builds a mock model from each
`tests/snapshots/<model>.schema` header (n_layer, n_head, n_head_kv, n_expert), keeps the tensors
that `tensor_allows_quantization` admits (as F32, sorted by block then name) and lists, per ftype,
every tensor whose type is not the ftype's default. Here the same sections come from the current
family's stock model, for every snapshot model whose full tensor list we have:
- deepseek-v3.1, qwen3.5-397b-a17b, qwen3.6-27b: the real layouts in ../shared/reference/real-layouts/;
- qwen3-0.6b, qwen3-14b, meta-llama-3.1-70b-instruct: dense stacks rebuilt exactly
  from the header and the architecture (head size 128 for all three).
Not covered, for want of their tensor lists (MoE and hybrid layouts cannot be rebuilt from five
numbers): gemma-3-4b-it, glm-4.6v, gpt-oss-120b, nvidia-nemotron-3-nano-30b-a3b, qwen3-coder-next,
step-3.5-flash.
"""

from __future__ import annotations

import re

import pytest
from helpers import layouts
from helpers.stock_binary import CURRENT_PIN as PIN
from helpers.stock_binary import fetched_tree

from qpatch.families.current.predict import is_quantizable
from qpatch.families.pins import family_of
from qpatch.gguf.catalogue import T
from qpatch.gguf.model_facts import ggml_n_dims
from qpatch.policy import loader
from qpatch.predict.engine import plan
from qpatch.predict.options import Options

pytestmark = pytest.mark.sdist  # upstream's snapshot files come from the pin's source

FAMILY = family_of(PIN)

REAL = {"deepseek-v3.1": ("DeepSeek-V3.1-Terminus.json", "deepseek2"),
        "qwen3.5-397b-a17b": ("Qwen3.5-397B-A17B.json", "qwen35moe"),
        "qwen3.6-27b": ("Qwen3.6-27B.json", "qwen35")}
DENSE = {"qwen3-0.6b": ("qwen3", False), "qwen3-14b": ("qwen3", False), "meta-llama-3.1-70b-instruct": ("llama", False)}
NOT_COVERED = ("gemma-3-4b-it", "glm-4.6v", "gpt-oss-120b", "nvidia-nemotron-3-nano-30b-a3b", "qwen3-coder-next",
               "step-3.5-flash")


def parse(text: str) -> list[tuple[str, str, dict[str, str]]]:
    """(ftype, default type, {tensor: type}) per section."""
    sections = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            m = re.fullmatch(r"\[(\w+)\] (\w+)", line)
            sections.append((m.group(1), m.group(2), {}))
        else:
            name, _, typ = line.rpartition(" ")
            sections[-1][2][name] = typ
    return sections


def model_facts(name: str, schema: str):
    hp = layouts.header_params(schema)
    if name in REAL:
        file, arch = REAL[name]
        tensors = [(n, s, "f32") for n, s, _ in layouts.real_layout(file)["tensors"]]
    else:
        arch, tied = DENSE[name]
        tensors = layouts.dense_tensors(n_embd=hp["n_embd"], n_ff=hp["n_ff"], n_vocab=hp["n_vocab"],
                                        n_layer=hp["n_layer"], n_head=hp["n_head"], n_head_kv=hp["n_head_kv"],
                                        head_dim=128, tied=tied)
    opts = Options(ftype=FAMILY.catalogue.parse_ftype("Q8_0"))
    kept = [t for t in tensors if is_quantizable(t[0], ggml_n_dims(tuple(t[1])), arch, opts)]
    return layouts.facts(name, arch, kept, n_layer=hp["n_layer"], n_head=hp["n_head"], n_head_kv=hp["n_head_kv"],
                         n_expert=hp.get("n_expert", 0))


@pytest.fixture(scope="module")
def snapshots():
    return fetched_tree(PIN) / "tests" / "snapshots"


def test_the_uncovered_list_is_exact(snapshots):
    assert sorted(p.stem for p in snapshots.glob("*.schema")) == sorted([*REAL, *DENSE, *NOT_COVERED])


@pytest.mark.parametrize("name", [*REAL, *DENSE])
def test_snapshot_reproduced(name, snapshots):
    text = (snapshots / f"{name}.schema").read_text()
    facts = model_facts(name, text)
    sections = parse(text)
    assert len(sections) == 33
    wrong = []
    for ftype, default, listed in sections:
        ft = FAMILY.catalogue.parse_ftype(ftype)
        assert ft.default.name.lower() == default.lower(), f"[{ftype}] default type"
        p = plan(facts, loader.stock(), Options(ftype=ft), FAMILY, PIN)
        # type choice alone, as llama_quant_compute_types: a missing imatrix matters only to a real run
        assert all(e in p.real_run_only for e in p.errors), f"[{ftype}] {p.errors[:2]}"
        got = {t.name: t.type for t in p.tensors}
        lacking = sorted(set(listed) - set(got))
        assert not lacking, f"[{ftype}] snapshot lists tensors we lack: {lacking[:3]}"
        for n, t in got.items():
            want = T[listed.get(n, default).upper()]
            if t != want:
                wrong.append(f"[{ftype}] {n}: snapshot {want.name}, qpatch {t.name}")
    assert not wrong, f"{len(wrong)} tensor types differ from upstream's snapshot:\n" + "\n".join(wrong[:20])

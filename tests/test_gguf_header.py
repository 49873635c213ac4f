"""The header reader against gguf.GGUFReader, and planning without importing numpy."""

from __future__ import annotations

import subprocess
import sys

import pytest
from gguf import GGUFReader

from qpatch.errors import ModelError
from qpatch.gguf import header as gguf_header
from qpatch.gguf.synth import Spec, write_model

SPEC = Spec("vocab", "deepseek2", 4, n_expert=8, leading_dense=1, shared_experts=1, attention="mla",
            tokenizer=True, n_vocab=20000, n_merges=5000)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_model(SPEC, tmp_path_factory.mktemp("h") / "vocab.gguf")


@pytest.mark.parametrize("window", [gguf_header._WINDOW, 64, 9])  # small windows: every boundary case
def test_same_as_gguf_reader(model, window, monkeypatch):
    monkeypatch.setattr(gguf_header, "_WINDOW", window)
    h = gguf_header.read_header(model)
    ref = GGUFReader(model)
    assert [(t.name, t.shape, int(t.type), t.offset) for t in h.tensors] == [
        (t.name, tuple(int(x) for x in t.shape), int(t.tensor_type), t.data_offset - ref.data_offset)
        for t in ref.tensors]
    assert h.data_offset == ref.data_offset
    assert h.skipped == {"tokenizer.ggml.tokens": (8, 20000), "tokenizer.ggml.token_type": (5, 20000),
                         "tokenizer.ggml.merges": (8, 5000)}
    assert h.kv["deepseek2.expert_count"] == 8 and h.kv["tokenizer.ggml.model"] == "gpt2"


def test_vocabulary_cut_short(model, tmp_path):
    data = model.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: data.index(b"<t19000>")])
    with pytest.raises(ModelError, match="truncated GGUF header"):
        gguf_header.read_header(cut)


def test_plan_imports_no_numpy_and_gguf_still_works():
    code = """
import sys
from qpatch import job
from qpatch.gguf import catalogue
from qpatch import cli
assert "numpy" not in sys.modules, "planning imported numpy"
import gguf
from gguf import GGUFReader, GGUFWriter
import gguf.constants
assert catalogue.T.Q2_0 == 42 and gguf.GGMLQuantizationType.Q4_K == catalogue.T.Q4_K
assert "numpy" in sys.modules
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def test_gguf_imported_first_is_used_as_is():
    code = """
import gguf
from qpatch.gguf import catalogue
from qpatch.gguf import constants as gguf_constants
assert gguf_constants.GGUFValueType is gguf.GGUFValueType
"""
    subprocess.run([sys.executable, "-c", code], check=True)

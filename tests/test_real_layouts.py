"""The seven real model layouts, written as real-size sparse GGUFs, through the current family's real
`llama-quantize --dry-run` (0c1e57098) against `qpatch plan`: every ftype the pin accepts.

These are the files quant makers actually run (DeepSeek-V3.1 at 1.34 TB apparent size, Qwen3.5-397B,
GLM-4.5-Air with its MTP block, Qwen3.5/3.6 hybrids with SSM tensors, Gemma 4 with per-layer heads):
names, shapes and source types are the real ones, the data region is a hole.
"""

from __future__ import annotations

import pytest
from helpers import dry_run, real_layouts
from helpers.stock_binary import CURRENT_PIN as PIN

from qpatch.families.pins import family_of

pytestmark = pytest.mark.binary

FTYPES = [f.name for f in family_of(PIN).catalogue.ftypes]


def test_sparse_files_are_real_size_and_tiny(real_layout_files):
    ds = real_layout_files["DeepSeek-V3.1-Terminus.json"]
    st = ds.stat()
    assert st.st_size > 1.3e12 and st.st_blocks * 512 < 1e6


@pytest.mark.parametrize("layout", list(real_layouts.LAYOUTS))
def test_real_layout_every_ftype_dry_run(layout, real_layout_files, current_quantize):
    failures = []
    for ft in FTYPES:
        try:
            dry_run.check(current_quantize, real_layout_files[layout], ft, pin=PIN)
        except AssertionError as e:
            failures.append(str(e))
    assert not failures, f"{len(failures)} of {len(FTYPES)} ftypes differ:\n" + "\n".join(failures[:3])

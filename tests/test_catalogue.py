"""Each family's catalogue.json is what its pin's own source says (never hand-edited)."""

from __future__ import annotations

import json

import pytest
from helpers.stock_binary import fetched_tree

from qpatch.families import extract, names
from qpatch.families.pins import available_pins, load_pin
from qpatch.gguf import FAMILIES_DIR
from qpatch.gguf.catalogue import load_catalogue


def _pin_of(family: str) -> str:
    return next(p for p in available_pins() if load_pin(p).family == family and
                any(s.kind == "sdist" for s in load_pin(p).sources))


@pytest.mark.sdist
@pytest.mark.parametrize("family", names())
def test_catalogue_is_extracted_from_the_pins_source(family):
    tree = fetched_tree(_pin_of(family))
    on_disk = (FAMILIES_DIR / family / "catalogue.json").read_text()
    assert on_disk == extract.dumps(extract.extract(tree)), (
        f"families/{family}/catalogue.json is stale: python -m qpatch.families.extract {tree} OUT.json")


def test_current_family_knows_the_new_types():
    cat = load_catalogue("current")
    names_ = {t.name for t in cat.types}
    assert {"Q1_0", "Q2_0"} <= names_ and cat.parse_ftype("q2_0").default.name == "Q2_0"
    assert json.loads((FAMILIES_DIR / "b6700" / "catalogue.json").read_text())["aliases"] == {
        "Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}
    assert "Q2_0" not in {f.name for f in load_catalogue("b6700").ftypes}


def test_the_generated_type_enum_is_current():
    """gguf/types.py is T as a real class, generated from the families' catalogue.json files (so editors and
    mypy see every member); `python -m qpatch.gguf.catalogue --write` rewrites it."""
    from qpatch.gguf import catalogue

    assert catalogue.TYPES_MODULE.read_text() == catalogue.render_types_module(), \
        "tool/qpatch/gguf/types.py is stale: run python -m qpatch.gguf.catalogue --write"
    assert catalogue.T.__module__ == "qpatch.gguf.types"

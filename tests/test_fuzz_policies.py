"""Property tests: random small rule sets are rendered, compiled into llama-quantize, run on zoo
models, and must equal the Python prediction tensor for tensor (or both must refuse the job).

CI runs a bounded number of compiled examples (each costs one incremental rebuild, ~6 s);
`make fuzz` runs more (QPATCH_FUZZ_EXAMPLES).
"""

from __future__ import annotations

import os

import differential
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rule_strategies import FTYPE_NAMES, policies
from stock_binary import PIN

from qpatch.codegen import render
from qpatch.families.pins import family_of
from qpatch.gguf.imatrix import read_imatrix
from qpatch.gguf.model_facts import read_model
from qpatch.predict.evaluate import Options, plan

EXAMPLES = int(os.environ.get("QPATCH_FUZZ_EXAMPLES", "6"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies())
def test_random_policies_render_deterministically(pol):
    a = render.render(pol, PIN)
    assert a == render.render(pol, PIN)
    assert a.count("    // fuzz:") == len(pol.rules)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(pol=policies(), ftype=st.sampled_from(FTYPE_NAMES), with_imatrix=st.booleans())
def test_random_policies_evaluate_on_every_zoo_model(zoo_facts, pol, ftype, with_imatrix):
    for facts, entries in zoo_facts.values():
        p = plan(facts, pol, Options(family_of(PIN).catalogue.parse_ftype(ftype),
                                     imatrix=entries if with_imatrix else None), family_of(PIN), PIN)
        assert len(p.tensors) == len(facts.tensors)


@pytest.fixture(scope="module")
def zoo_facts(zoo_files):
    return {name: (read_model(m), read_imatrix(im)) for name, (m, im) in zoo_files.items()}


@pytest.mark.binary
@pytest.mark.xdist_group("patched")
@settings(max_examples=EXAMPLES, deadline=None, derandomize=os.environ.get("QPATCH_FUZZ_RANDOM") is None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(pol=policies(), data=st.data())
def test_random_policies_compiled_equal_prediction(patched_build, zoo_files, tmp_path_factory, pol, data):
    binary = patched_build.switch(pol)
    model = data.draw(st.sampled_from(sorted(zoo_files)), label="model")
    ftypes = data.draw(st.lists(st.sampled_from(FTYPE_NAMES), min_size=1, max_size=2, unique=True), label="ftypes")
    path, imatrix = zoo_files[model]
    out = tmp_path_factory.mktemp("fuzz")
    for ft in ftypes:
        for im in (imatrix, None):
            differential.check(binary, path, ft, out, imatrix=im, policy=pol)

"""Property tests: random small rule sets are rendered, compiled into llama-quantize, run on zoo
models, and must equal the Python prediction tensor for tensor (or both must refuse the job).

CI runs a bounded number of compiled examples (each costs one incremental rebuild, ~6 s);
`make fuzz` runs more (QPATCH_FUZZ_EXAMPLES).
"""

from __future__ import annotations

import dataclasses
import os
import re

import pytest
from helpers import differential
from helpers.rule_strategies import FTYPE_NAMES, policies
from helpers.stock_binary import PIN
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qpatch.codegen import render
from qpatch.families.pins import family_of
from qpatch.gguf.imatrix import read_imatrix
from qpatch.gguf.model_facts import kind_of, read_model
from qpatch.policy.model import Keep, Rule, Select, Set
from qpatch.predict.engine import plan
from qpatch.predict.options import Options

EXAMPLES = int(os.environ.get("QPATCH_FUZZ_EXAMPLES", "6"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies())
def test_random_policies_render_deterministically(pol):
    a = render.render(pol, PIN)
    assert a == render.render(pol, PIN)
    assert a.count("    // fuzz:") == len(pol.rules)


def _plan(facts, pol, ftype, entries):
    fam = family_of(PIN)
    return plan(facts, pol, Options(fam.catalogue.parse_ftype(ftype), imatrix=entries), fam, PIN)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(pol=policies(), ftype=st.sampled_from(FTYPE_NAMES), with_imatrix=st.booleans())
def test_random_policies_change_only_what_their_rules_decide(zoo_facts, pol, ftype, with_imatrix):
    """Metamorphic properties, each checked against another plan or the rule itself, not against the
    code under test: (1) a tensor no rule decided has stock's type; (2) a rule decided only tensors its
    selection names (checked by plain string tests here); (3) a Set rule's tensor has its type unless the
    shape fallback replaced it; (4) a catch-all Keep() rule appended changes nothing (first match)."""
    # the policy's own fallback table and missing-imatrix choice touch tensors no rule decided: off here
    pol = dataclasses.replace(pol, fallback=None, missing_imatrix="abort", imatrix_mismatch="abort")
    stock = dataclasses.replace(pol, rules=())
    catch_all = dataclasses.replace(pol, rules=pol.rules + (
        Rule(select=Select(pattern="."), when=(), then=Keep(), source="fuzz:catch-all"),))
    by_source = {r.source: r for r in pol.rules}
    for facts, entries in zoo_facts.values():
        entries = entries if with_imatrix else None
        p, base = _plan(facts, pol, ftype, entries), _plan(facts, stock, ftype, entries)
        assert [t.name for t in p.tensors] == [t.name for t in base.tensors] == [t.name for t in facts.tensors]
        for t, b in zip(p.tensors, base.tensors, strict=True):
            r = by_source.get(re.match(r"[^;( ]*", t.rule).group(0))
            if r is None:
                assert t.type == b.type, \
                    f"{t.name}: no rule decided it ({t.rule}), yet {t.type.name} != stock's {b.type.name}"
                continue
            sel = r.select
            assert (kind_of(t.name) in sel.kinds) if sel.kinds else (sel.contains in t.name), (t.name, r)
            if isinstance(r.then, Set) and not t.fell_back and "--" not in t.rule:
                assert t.type == r.then.type or t.rule.endswith("(already this type)"), (t.name, r)
        c = _plan(facts, catch_all, ftype, entries)
        diff = [(a.name, a.type.name, a.rule, b.type.name, b.rule) for a, b in zip(p.tensors, c.tensors)
                if a.type != b.type]
        assert not diff, diff[:3]


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

"""`job.make_plan` for the differential tests, with the model header, the imatrix and the policy read once
per test process (a proof plans thousands of cases over a dozen files; reading them is most of its Python)."""

from __future__ import annotations

import dataclasses
import functools
import os

from qpatch import job
from qpatch.gguf.imatrix import read_imatrix
from qpatch.gguf.model_facts import read_model
from qpatch.policy import loader
from qpatch.policy.model import Policy
from qpatch.predict.engine import plan


def _key(path) -> tuple[str, int, int]:
    st = os.stat(path)
    return str(path), st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=128)
def _facts(key):
    return read_model(key[0])


@functools.lru_cache(maxsize=128)
def _imatrix(key):
    return read_imatrix(key[0])


@functools.lru_cache(maxsize=32)
def _policy(name: str) -> Policy:
    return loader.load(name)


def make_plan(model, ftype: str, *, pin: str, policy="stock", imatrix=None, **options):
    opts = job.make_options(pin, ftype, **options)
    opts = dataclasses.replace(opts, imatrix=_imatrix(_key(imatrix)) if imatrix else None)
    pol = policy if isinstance(policy, Policy) else _policy(policy)
    return plan(_facts(_key(model)), pol, opts, job.family_of(pin), pin)

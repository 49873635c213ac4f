"""Shared fixtures: checkouts (checkout_fixtures), the synthetic zoo and the stock binary."""

from __future__ import annotations

import pytest

import stock_binary
import zoo
from checkout_fixtures import base_checkout, checkout, upstream  # noqa: F401  (test_checkout*, test_series*)


@pytest.fixture(scope="session")
def zoo_files(tmp_path_factory):
    """Model name -> (model path, full synthetic imatrix path), written once per session and worker."""
    return zoo.write_zoo(tmp_path_factory.mktemp("zoo"))


@pytest.fixture(scope="session")
def stock_quantize():
    """Stock llama-quantize of the pin, built from source once (cached in ~/.cache/qpatch/test)."""
    return stock_binary.stock_quantize()

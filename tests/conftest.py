"""Shared fixtures: checkouts (checkout_fixtures), the synthetic zoo, the stock and the patched binary."""

from __future__ import annotations

import shutil

import pytest
from helpers import stock_binary, zoo
from helpers.checkout_fixtures import base_checkout, checkout, upstream  # noqa: F401  (test_checkout*, test_series*)
from helpers.policy_build import PatchedBuild


@pytest.fixture(scope="session")
def zoo_files(tmp_path_factory):
    """Model name -> (model path, full synthetic imatrix path), written once per session and worker."""
    return zoo.write_zoo(tmp_path_factory.mktemp("zoo"))


@pytest.fixture(scope="session")
def stock_quantize():
    """Stock llama-quantize of the pin, built from source once (cached in ~/.cache/qpatch/test)."""
    return stock_binary.stock_quantize()


@pytest.fixture(scope="session")
def real_layout_files(tmp_path_factory):
    """The seven real layouts of ../shared/reference/real-layouts/ as real-size sparse GGUFs."""
    from helpers import real_layouts

    d = tmp_path_factory.mktemp("real-layouts")
    return {f: real_layouts.write(f, d / f.replace(".json", ".gguf")) for f in real_layouts.LAYOUTS}


@pytest.fixture(scope="session")
def current_quantize():
    """Stock llama-quantize of the current family's pin (0c1e57098), built once, cached."""
    return stock_binary.stock_quantize(stock_binary.CURRENT_PIN)


@pytest.fixture(scope="session")
def current_patched_build():
    """A checkout of 0c1e57098 with qpatch's hook, switched between policies (its own cache and group)."""
    pb = PatchedBuild(stock_binary.CURRENT_PIN)
    pb.ensure()
    return pb


@pytest.fixture(scope="session")
def patched_build():
    """One checkout of the pin with qpatch's hook, switched between policies (tests/helpers/policy_build.py)."""
    pb = PatchedBuild()
    pb.ensure()
    return pb


# Fixtures that need a pin's source: its sdist from the package index (pip download, then cached under
# ~/.cache/qpatch). A test using one, or a compiled binary (made from that source), is marked `sdist`:
# `-m "not sdist"` runs on a machine with no index and an empty cache.
SDIST_FIXTURES = frozenset({"upstream", "stock_quantize", "current_quantize", "patched_build", "current_patched_build",
                            "ik_stock"})


def pytest_collection_modifyitems(config, items):
    has_gpu = shutil.which("nvidia-smi") is not None
    for item in items:
        if SDIST_FIXTURES & set(getattr(item, "fixturenames", ())) or item.get_closest_marker("binary"):
            item.add_marker(pytest.mark.sdist)
        if item.get_closest_marker("gpu") and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs an NVIDIA GPU (nvidia-smi); run on the device"))

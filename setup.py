"""Packages of a qpatch install (the rest of the metadata is in pyproject.toml).

tool/qpatch is the code. The repository's patches/ (every pin's pin.toml, series and patches) and
policies/ (the shipped policies) are installed beside it as the data package `qpatch_data`, found at run
time by `qpatch.shipped` when qpatch does not run from a source checkout. Each pin family's catalogue and
template, and the shared template, are package data of qpatch.

Every folder Python could import is declared a package (data folders included: codegen/templates, a
pin's patches/NAME), so that setuptools has nothing to warn about ("Package would be ignored").
"""

from pathlib import Path

from setuptools import find_namespace_packages, setup

HERE = Path(__file__).parent
PIN_PACKAGES = sorted(f"qpatch_data.patches.{p.name}" for p in (HERE / "patches").iterdir()
                      if p.is_dir() and p.name.isidentifier())

setup(
    packages=find_namespace_packages("tool", include=["qpatch", "qpatch.*"], exclude=["*.__pycache__"])
    + ["qpatch_data", "qpatch_data.patches", "qpatch_data.policies"] + PIN_PACKAGES,
    package_dir={"": "tool", "qpatch_data.patches": "patches", "qpatch_data.policies": "policies"},
    package_data={
        "qpatch": ["codegen/templates/*.j2", "families/*/*.json", "families/*/*.j2"],
        "qpatch.codegen.templates": ["*.j2"],
        "qpatch_data.patches": ["*/*"],
        **{name: ["*"] for name in PIN_PACKAGES},
    },
)

"""Packages of a qpatch install (the rest of the metadata is in pyproject.toml).

tool/qpatch is the code. The repository's patches/ (every pin's pin.toml, series and patches) and
policies/ (the shipped policies) are installed beside it as the data package `qpatch_data`, found at run
time by `qpatch.shipped` when qpatch does not run from a source checkout. Each pin family's catalogue and
template, and the shared template, are package data of qpatch.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages("tool") + ["qpatch_data", "qpatch_data.patches", "qpatch_data.policies"],
    package_dir={"": "tool", "qpatch_data.patches": "patches", "qpatch_data.policies": "policies"},
    package_data={
        "qpatch": ["codegen/templates/*.j2", "families/*/*.json", "families/*/*.j2"],
        "qpatch_data.patches": ["*/*"],
    },
)

"""Stage 6, the llama.cpp checkout: where a pin's source comes from (sources.py: sdist from PyPI via
sdist.py, or git), its patch series (patchset.py), the checkout repository with its branches and
recorded state (repo.py), and `apply`, which commits a rendered policy on top of the series
(apply.py). Never clobbers a user's uncommitted changes."""

"""Stage 2, policies: the frozen data model a policy file builds (model.py), the loader that finds,
runs and hashes policy files (loader.py), block helpers for rules (blocks.py) and the listing behind
`qpatch list`/`show` (listing.py). Knows nothing of pins or of C++."""

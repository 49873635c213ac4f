"""Stage 11, shelves: one real llama-quantize run per candidate type, kept split one tensor group per
shard (shelf.py, groups.py), and any mix of those types assembled from them byte for byte, as copies or as
links to whole shards (assemble.py). A tensor's bytes under a type depend only on its rows, the type and
its imatrix entry, so shelves stand in for quantizing every mix; tests/test_shelves.py proves it against
the real binary."""

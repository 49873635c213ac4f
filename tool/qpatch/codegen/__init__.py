"""Stage 5, code generation: a policy rendered with Jinja (templates/, extended by each family's
policy.h.j2) into the C++ header a pin's hook includes (render.py). Deterministic; every generated line
names the rule behind it."""

"""`python -m qpatch`: the same command line as the `qpatch` script."""

from .cli import main

main()

"""`python -m qpatch`: the same command line as the `qpatch` script."""

from qpatch.cli import main

main()

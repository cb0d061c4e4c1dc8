"""`python -m mamori.cli` runs the command line, as `mamori` and `python -m mamori` do."""

from mamori.cli import main

main()

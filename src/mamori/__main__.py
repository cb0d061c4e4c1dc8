"""`python -m mamori` runs the command line."""

from mamori.cli import main

main()

"""`python -m vucompat`: the command line (the relay process re-executes itself this way)."""

from vucompat.cli import main

main()

"""`python -m tidemark` runs the CLI (tests use it to run the code of their own checkout)."""

from tidemark.cli import main

main()

"""CLI subcommands, one module each (see infsim/cli.py)."""

"""The click command line: parse, call, report."""

from animegan_cli.cli.app import main

__all__ = ["main"]

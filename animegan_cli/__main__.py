"""The ``animegan`` executable (and ``python -m animegan_cli``): signals held from the start."""

from animegan_cli.core.signals import hold_early


def main() -> None:
    """Run the command line, holding SIGINT/SIGTERM from before the slow imports."""
    # A run stopped while torch imports still ends through the CLI: summary, --report, 143.
    hold_early()
    from animegan_cli.cli.app import main as command_line

    command_line()


if __name__ == "__main__":
    main()

"""`clip` command line; subcommands are added as the tasks land."""

import sys


def main(argv=None):
    from clip.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())

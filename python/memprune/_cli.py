"""The `memprune` command installed by the wheel: the binary's own command line."""

import sys

from ._memprune import cli_main


def main() -> None:
    sys.exit(cli_main(["memprune", *sys.argv[1:]]))


if __name__ == "__main__":
    main()

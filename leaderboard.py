"""Rank runs: ``python leaderboard.py outputs --sort test/fid`` (see README.md)."""

import argparse
import logging
import sys

from zoo.errors import ZooError
from zoo.leaderboard import write_leaderboard


def main() -> None:
    parser = argparse.ArgumentParser(description="Rank the runs under a folder by a metric.")
    parser.add_argument(
        "root", nargs="?", default="outputs", help="folder of runs (default: outputs)"
    )
    parser.add_argument("--sort", default="test/fid", help="metric to rank by (default: test/fid)")
    parser.add_argument("--out", default=None, help="where to write (default: the runs folder)")
    arguments = parser.parse_args()
    # A run left out (a broken results.json) is one line on stderr.
    logging.basicConfig(level=logging.WARNING, format="leaderboard.py: %(message)s")
    try:
        written = write_leaderboard(arguments.root, arguments.sort, arguments.out)
    except ZooError as error:
        sys.exit(f"leaderboard.py: {error}")
    print(written["table"].read_text())
    for name, path in written.items():
        print(f"{name:<8}{path}")


if __name__ == "__main__":
    main()

"""The real server with some durability fixes switched off (for tests that prove teeth).

``python variant_server.py --patch NAME [--patch NAME ...] -- SERVER ARGS``:
applies :data:`mutations.MUTATIONS` ``NAME`` (e.g. ``no-flush-before-ack``) to
this process only, then runs the normal ``fastpaca-server`` entry point.
"""

from __future__ import annotations

import argparse
import sys

from fastpaca_server.cli import main

from tests.durability import mutations

if __name__ == "__main__":
    separator = sys.argv.index("--")
    parser = argparse.ArgumentParser()
    parser.add_argument("--patch", action="append", default=[], choices=sorted(mutations.MUTATIONS))
    options = parser.parse_args(sys.argv[1:separator])
    for name in options.patch:
        mutations.apply(name)
    main(sys.argv[separator + 1 :])

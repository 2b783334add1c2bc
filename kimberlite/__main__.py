"""``python -m kimberlite``: the command line of kimberlite/cli.py."""

import sys

from kimberlite.cli import main

if __name__ == "__main__":
    sys.exit(main())

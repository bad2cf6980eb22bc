"""``python -m autobayes``: the ``autobayes`` command line (see :mod:`autobayes.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

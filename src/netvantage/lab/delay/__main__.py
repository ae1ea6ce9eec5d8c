"""``python -m netvantage.lab.delay``: run the delay element (see :mod:`.daemon`)."""

import sys

from .daemon import main

if __name__ == "__main__":
    sys.exit(main())

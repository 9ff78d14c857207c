"""``ray job submit -- python jobs/segment.py INPUT OUTPUT [--model M]``.

A thin wrapper: the arguments and behaviour are those of ``spiralray segment``.
"""

import sys

from spiralray.cli import main

if __name__ == "__main__":
    sys.exit(main(["segment", *sys.argv[1:]]))

"""``ray job submit -- python jobs/ingest.py SRC DST [--chunk-size N]``.

A thin wrapper: the arguments and behaviour are those of ``spiralray ingest``.
"""

import sys

from spiralray.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))

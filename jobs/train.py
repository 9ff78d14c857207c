"""``ray job submit --working-dir . -- python jobs/train.py --data PATH [...]``.

Same arguments as ``spiralray train``; inside a Ray job it joins the job's cluster.
"""

import sys

from spiralray.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))

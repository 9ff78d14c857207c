"""``ray job submit --working-dir . -- python jobs/train.py --data PATH[:FRAMES] [...]``.

The flags of ``spiralray train`` (``spiralray.train.job_args``): several ``--data`` sources,
``--val-data``, ``--synthetic N --synthetic-preset diverse``, ``--init MODEL``, ``--zoom``,
``--contact-weight W --contact-fraction F`` (training aimed at touching nuclei),
``--small-fraction F [--small-area PX]`` (regions centred on micronuclei and blebs),
``--tissue-fraction F`` (regions given a tissue section's autofluorescent background),
``--conform-outlines SOURCE [--conform-level A --conform-passes N]`` (a source's labels peeled
to the manual outline convention first, ``spiralray.data.outlines``), ``--skip-inner N`` (the
``--init`` segmenter's skip modules grown to N inner channels, same masks at the start,
``spiralray.train.widen``) and ``--register NAME
[--alias A]``, which registers the trained model in MLflow. Inside a Ray job it joins the job's
cluster (with ``MLFLOW_TRACKING_URI`` in the job's runtime env: a job without one is refused).
The data and recipe the shipped model grew from (v11's; the shipped v14 is v11 fine-tuned
further and its thresholds calibrated, docs/training.md), fine-tuned from the shipped model:

    python jobs/train.py --init spiralray/weights/spiralnet \\
        --data ../shared/data/bbbc039/train --data ../shared/data/hela:0-13 \\
        --val-data ../shared/data/bbbc039/val --val-data ../shared/data/hela:14-16 \\
        --conform-outlines ../shared/data/hela:0-13 --conform-outlines ../shared/data/hela:14-16 \\
        --conform-level 0.5 --conform-passes 2 \\
        --synthetic 64 --zoom 0.5,0.75,1.0,1.33 --lr 3e-4 --contact-weight 4 --contact-fraction 0.5 \\
        --register spiralnet --alias candidate
"""

import sys

from spiralray.errors import SpiralrayError
from spiralray.train.job_args import run

if __name__ == "__main__":
    try:
        sys.exit(run(sys.argv[1:]))
    except SpiralrayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)

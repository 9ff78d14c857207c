"""One model directory from the segmenter of one and the scorer (with its score label) of another.

python bench/combine.py --segmenter /tmp/v4 --scorer /tmp/sc --out /tmp/v4c
"""

import argparse

from spiralray import modelzoo


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--segmenter", required=True)
    ap.add_argument("--scorer", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    net, other = modelzoo.load(args.segmenter), modelzoo.load(args.scorer)
    net.scorer.load_state_dict(other.scorer.state_dict())
    net.config = net.config.replace(model={"score_label": other.config.model.score_label})
    modelzoo.save(net, args.out)
    print(args.out, net.config.model)


if __name__ == "__main__":
    main()

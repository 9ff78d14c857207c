"""Seconds-long checks of every GPU path before a device session spends minutes on it:
the engine (float32 equal to the CPU's labels; bf16/fp16 run), both training stages with loader
workers, and the U-Net baseline."""

import sys
import time

import numpy as np

from spiralray import modelzoo
from spiralray.bench.baselines import fit_unet
from spiralray.core.config import SpiralNetConfig
from spiralray.core.engine import Engine
from spiralray.core.metrics import labels_equal
from spiralray.core.models import UNet
from spiralray.core.net import SpiralNet
from spiralray.data.normalize import normalize
from spiralray.data.synthetic import SyntheticSpec, generate, generate_many
from spiralray.train.local import fit
from spiralray.train.sampling import RegionSampler
from spiralray.train.steps import TrainSpec

device = sys.argv[1] if len(sys.argv) > 1 else "cuda"
t0 = time.time()
image = generate(SyntheticSpec(256, 320), seed=3)[0]
net = modelzoo.load(None)
cpu = Engine(modelzoo.load(None), device="cpu").segment(image).labels
dev = Engine(net, device=device).segment(image).labels
eq = labels_equal(dev, cpu)
print("engine float32 vs cpu:", eq, f"{len(np.unique(cpu)) - 1} objects", flush=True)
assert eq["equal"], "the engine on this device does not reproduce the CPU's labels"  # TF32: a few px
for dtype in ("bfloat16", "float16") if device != "cpu" else ():
    lb = Engine(modelzoo.load(None), device=device, dtype=dtype).segment(image).labels
    print(
        f"engine {dtype}: {len(np.unique(lb)) - 1} objects",
        labels_equal(lb, cpu)["differing_pixels"],
        flush=True,
    )
pairs = generate_many(4, SyntheticSpec(192, 192), seed=5)
cfg = SpiralNetConfig()
sampler = RegionSampler([normalize(im) for im, _ in pairs], [lb for _, lb in pairs], cfg, scales=(0.75, 1.0))
its = {}
fit(
    SpiralNet.build(cfg, seed=0),
    sampler,
    TrainSpec(),
    4,
    6,
    device=device,
    loader_workers=2,
    log=lambda n, i, loss: its.__setitem__(n, (i, loss)),
)
print("fit:", its, flush=True)
assert its["scorer"][0] > 1 and its["segmenter"][0] > 1 and all(np.isfinite(v[1]) for v in its.values())
fit_unet(UNet(base=8), sampler, 3, device=device, log=lambda n, i, loss: its.__setitem__(n, (i, loss)))
print("unet:", its["unet"], flush=True)
print(f"smoke ok in {time.time() - t0:.0f} s")

"""``spiralray demo``: the main job end to end on this machine. A generated archive of four
2048 x 2048 OME-Zarr images (16.8 Mpx, synthetic nuclei at HeLa-like density) is segmented on
an embedded Ray by the pipeline a cluster job runs; it writes the OME-Zarr labels, an overlay
PNG of one image and a summary scored against the generator's truth."""

from __future__ import annotations

import json
import os
import time

import numpy as np

from .data.synthetic import SyntheticSpec, generate

IMAGES, SIZE = 4, 2048


def make_archive(path: str, n: int = IMAGES, size: int = SIZE, seed: int = 7) -> list[np.ndarray]:
    """A zarr group of ``n`` OME-Zarr images (NGFF 0.5, 512-px chunks); returns their truths."""
    import zarr
    from ome_zarr.writer import write_image

    root = zarr.open_group(path, mode="w")
    truths = []
    for i in range(n):
        image, truth = generate(SyntheticSpec(size, size, density=0.0005), seed=seed + i)
        write_image(
            image, root.create_group(f"field_{i:02d}"), axes="yx", storage_options={"chunks": (512, 512)}
        )
        truths.append(truth)
    return truths


def overlay(image: np.ndarray, labels: np.ndarray, path: str, side: int = 768) -> None:
    """RGB PNG of the image's central ``side`` x ``side`` px at full resolution: the image in
    grey, the labels' outlines in green (decimating would erase one-pixel outlines)."""
    import imageio.v3 as iio
    from skimage.segmentation import find_boundaries

    from .data.normalize import normalize

    y0, x0 = max(0, (image.shape[0] - side) // 2), max(0, (image.shape[1] - side) // 2)
    crop = (slice(y0, y0 + side), slice(x0, x0 + side))
    g = (np.clip(normalize(image)[crop], 0, 1) * 255).astype(np.uint8)
    rgb = np.stack([g, g, g], -1)
    rgb[find_boundaries(labels[crop], mode="thick")] = (0, 255, 0)
    iio.imwrite(path, rgb)


def run_demo(out: str = "demo_out", images: int = IMAGES, size: int = SIZE) -> int:
    """Generate the archive in ``out``, segment it, score it, write the overlay and summary."""
    import zarr

    from . import api
    from .core.metrics import evaluate
    from .io.readers import open_image
    from .pipeline.local import Progress
    from .pipeline.run import Options
    from .pipeline.segment import segment

    os.makedirs(out, exist_ok=True)
    archive, labels_out = os.path.join(out, "archive.zarr"), os.path.join(out, "labels")
    print(f"demo: generating {images} images of {size} x {size} px in {archive}", flush=True)
    truths = make_archive(archive, images, size)
    engine = api.load_engine(None)
    t0 = time.perf_counter()
    summary = segment(
        archive, labels_out, engine, Options(tile_size=1024, overwrite=True), progress=Progress(0)
    )
    seconds = time.perf_counter() - t0
    scores = []
    for i, truth in enumerate(truths):
        got = np.asarray(zarr.open_array(f"{labels_out}/field_{i:02d}/labels/instances/0", mode="r")[...])
        scores.append(evaluate(got, truth))
    reader = open_image(f"{archive}/field_00")
    first = reader.read(0, size, 0, size)
    got0 = np.asarray(zarr.open_array(f"{labels_out}/field_00/labels/instances/0", mode="r")[...])
    overlay(first, got0, os.path.join(out, "overlay.png"))
    result = {
        "images": summary["images"],
        "pixels": images * size * size,
        "objects": summary["objects"],
        "regions": summary["regions"],
        "seconds": round(seconds, 1),
        "regions_per_s": round(summary["regions"] / seconds, 1),
        "object_f1_50": [round(s["object_f1_50"], 3) for s in scores],
        "pixel_f1": [round(s["pixel_f1"], 3) for s in scores],
        "failed": summary["failed"],
        "output": labels_out,
    }
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(
        f"demo: {result['objects']} nuclei in {result['images']} images ({result['pixels'] / 1e6:.1f} Mpx) "
        f"in {seconds:.0f} s on Ray; object F1@0.5 per image {result['object_f1_50']}"
    )
    print(f"demo: labels in {labels_out}/ (OME-Zarr), overlay {out}/overlay.png, summary {out}/summary.json")
    return 0

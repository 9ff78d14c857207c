"""Carry a U-Net's weights off a device session, whose files are capped at 16 MiB each.

python bench/gpu/unet_parts.py split MODEL.safetensors OUT_DIR      # there: unet32_p0..pN
python bench/gpu/unet_parts.py join OUT_DIR bench/weights/unet32 [config.json]   # here
"""

import glob
import os
import shutil
import sys

from safetensors.torch import load_file, save_file

PART_BYTES = 12e6  # under the cap, with room for the safetensors header


def split(model: str, out: str) -> None:
    tensors = load_file(model)
    parts, size = [{}], 0
    for k in sorted(tensors):
        b = tensors[k].numel() * tensors[k].element_size()
        if size + b > PART_BYTES and parts[-1]:
            parts.append({})
            size = 0
        parts[-1][k] = tensors[k]
        size += b
    for i, part in enumerate(parts):
        save_file(part, os.path.join(out, f"unet32_p{i}.safetensors"))
    print(f"{len(tensors)} tensors -> {len(parts)} parts in {out}")


def join(src: str, dst: str, config: str | None = None) -> None:
    tensors = {}
    for path in sorted(glob.glob(os.path.join(src, "unet32_p*.safetensors"))):
        tensors.update(load_file(path))
    os.makedirs(dst, exist_ok=True)
    save_file(tensors, os.path.join(dst, "model.safetensors"))
    if config:
        shutil.copy(config, os.path.join(dst, "config.json"))
    print(f"{len(tensors)} tensors -> {dst}")


if __name__ == "__main__":
    {"split": split, "join": join}[sys.argv[1]](*sys.argv[2:])

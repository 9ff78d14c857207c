"""Rejoin the U-Net parts a device session brought back (files are capped at 16 MiB there).

python bench/gpu/join_unet.py /work/.device/N bench/weights/unet32 [spiralnets.tar's unet32/config.json]
"""

import glob
import os
import shutil
import sys

from safetensors.torch import load_file, save_file

src, dst = sys.argv[1], sys.argv[2]
tensors = {}
for path in sorted(glob.glob(os.path.join(src, "unet32_p*.safetensors"))):
    tensors.update(load_file(path))
os.makedirs(dst, exist_ok=True)
save_file(tensors, os.path.join(dst, "model.safetensors"))
if len(sys.argv) > 3:
    shutil.copy(sys.argv[3], os.path.join(dst, "config.json"))
print(f"{len(tensors)} tensors -> {dst}")

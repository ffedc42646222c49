"""Evaluators: FID (Flax FID Inception), PSNR/SSIM/LPIPS, codebook usage, rate–distortion.

Modules: `evaluators` (the `Evaluator` contract, the static `EVALUATORS` dict and
`build_evaluators`), `fid`, `recon` (THE PSNR, SSIM, ...), `codebook`, `rate_distortion`,
`reduce` (cross-host sums). The networks they use live in `jaxtok.nets`. CLI:
`python -m jaxtok.eval --help`. Nothing is imported here, so `import jaxtok.eval` stays cheap.
"""

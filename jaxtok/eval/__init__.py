"""Evaluators: FID (Flax FID Inception), PSNR/SSIM/LPIPS, codebook usage, rate–distortion.

Modules: `inception` (network + pytorch-fid input pipeline), `inception_weights` (finding and
converting the weights), `fid`, `recon`, `codebook`, `rate_distortion`, `common` (the
`Evaluator` contract and `build_evaluators`). CLI: `python -m jaxtok.eval --help`.
Submodules are imported lazily so `import jaxtok.eval` stays cheap.
"""

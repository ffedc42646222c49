"""jaxtok: 1D image tokenizers (TiTok, One-D-Piece, FlexTok, FQGAN) in JAX/Flax NNX."""
import re
from pathlib import Path

from setuptools import find_packages, setup

_HERE = Path(__file__).parent
_VERSION = re.search(r'__version__ = "([^"]+)"',
                     (_HERE / "jaxtok" / "__init__.py").read_text()).group(1)

INSTALL_REQUIRES = [
    "jax>=0.5.0",
    "flax>=0.11.0",
    "optax>=0.2.4",
    "orbax-checkpoint>=0.11.0",
    "grain>=0.2.10",
    "array-record>=0.8",
    "msgpack>=1.0",
    "tensorflow-datasets>=4.9.7",
    "ml-collections>=1.0.0",
    "numpy>=1.26",
    "scipy>=1.11",
    "pillow>=10.0",
    "scikit-image>=0.22",
    "scikit-learn>=1.3",
    "matplotlib>=3.8",
    "tqdm>=4.66",
    "tensorboardX>=2.6.2",
    "absl-py>=2.0",
    "pyyaml>=6.0",  # official 1d-tokenizer configs are YAML
    "constriction>=0.4.0",  # range coder of .jtok files (jaxtok.codec)
    "huggingface_hub>=0.26",  # jaxtok.load("hf:..."): released weights (jaxtok.hub)
    "safetensors>=0.4",  # the reader of .safetensors checkpoints (jaxtok.io.safetensors)
]

EXTRAS = {
    "test": [
        "pytest>=8.0",
        "pytest-xdist>=3.5",
        "ruff>=0.6",
        "nbmake>=1.5",
        "ipykernel>=6.0",
        "datasets>=3.0",  # the hf: data source's tests
    ],
    # hf:PATH data sources: Hugging Face datasets saved on disk (arrow or parquet).
    "hf": ["datasets>=3.0"],
    # PyTorch is only needed by converters of .bin/.pt files, the parity tools and the
    # FID benchmark. Pinned: an unpinned `torch` would resolve to a multi-GB CUDA build.
    # diffusers and transformers (no torch requirement of their own: they use the pinned one)
    # build the parity references: AutoencoderKL (tests/tokenizers/vae/test_model.py) and the
    # DINOv2 / CLIP teachers (tests/nets/test_vit_teachers.py).
    "torch": ["torch==2.13.0", "diffusers>=0.30", "transformers>=5.0,<6"],
    # Regenerating tests/fixtures/quantizers/vqp_quantizers.npz (tools/fixtures/vqp_quantizers.py);
    # the parity tests read the stored file and need none of it.
    "fixtures": ["torch==2.13.0", "vector-quantize-pytorch==1.34.1", "einx==0.4.3", "einops>=0.8",
                 "torch-einops-utils==0.2.9", "loguru", "frozendict"],
    # tfrecord-backed tfds datasets; array_record ones need no TensorFlow.
    "tf": ["tensorflow>=2.16"],
    "notebooks": ["jupyter>=1.0", "ipykernel>=6.0", "nbmake>=1.5"],
    "gpu": ["jax[cuda12]>=0.5.0"],
    # jax[tpu] brings the libtpu matching jax: on a TPU VM the runtime, on any host the TPU
    # compiler that `python -m jaxtok.trainers.plan` (deviceless AOT) and its tests use.
    "tpu": ["jax[tpu]>=0.5.0"],
}

setup(
    name="jaxtok",
    version=_VERSION,
    description="1D image tokenizers (TiTok, One-D-Piece, FlexTok, FQGAN) in JAX/Flax NNX",
    long_description=(_HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["jaxtok", "jaxtok.*"]),
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": [
        "jaxtok-train=jaxtok.trainers.train:run",
        "jaxtok-eval=jaxtok.eval.__main__:main",
        "jaxtok-convert=jaxtok.tokenizers.convert.__main__:main",
    ]},
    license="Apache-2.0",
)

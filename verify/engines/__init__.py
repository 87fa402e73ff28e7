"""Engines: ``reference`` (pure PyTorch, mirrors mamba_ssm), ``mamba_ssm`` (its CUDA modules) and ``transformers``
(Hugging Face transformers' Mamba / Mamba-2 mixers on the CPU, ``verify.engines.hf``).

All take a ``constructions.layout.Construction`` and token ids and return the mixer output (batch, L, d_model);
the readout is applied by the checks, only at the positions they score. Each asks the construction's block kind
(``verify.blocks``) for what it runs: its forward, or its module of mamba_ssm or transformers.
"""
from __future__ import annotations

from common.errors import RequirementError

DTYPES = ("float64", "float32", "tfloat32", "bfloat16", "float16")  # tfloat32: float32 tensors, TF32 matmuls (GPU)
ENGINES = ("reference", "mamba_ssm", "transformers")


def make_engine(name: str, dtype: str = "float64", device: str | None = None):
    """The engine called ``name`` in ``dtype``; raises RequirementError naming what is missing."""
    if dtype not in DTYPES:
        raise RequirementError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if name == "reference":
        if dtype == "tfloat32":
            raise RequirementError("dtype tfloat32 (float32 tensors with TF32 tensor-core matmuls) is a precision of "
                                   "the mamba_ssm engine on a GPU; use float32 on the reference engine")
        from verify.engines.reference import ReferenceEngine

        return ReferenceEngine(dtype, device or "cpu")
    if name == "mamba_ssm":
        from verify.engines.cuda import MambaSSMEngine

        return MambaSSMEngine(dtype)
    if name == "transformers":
        from verify.engines.hf import TransformersEngine

        return TransformersEngine(dtype, device)
    raise RequirementError(f"engine must be one of {ENGINES}, got {name!r}")

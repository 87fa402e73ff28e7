"""Trainable one-layer models: the packed pure-torch/kernel model and the real mamba_ssm module model.

Both expose ``params`` (leaf tensors), ``masks`` (1 = trainable, 0 = frozen, same shapes), ``stacked`` (whether every
parameter has a leading model axis of size K), ``hidden(tokens)`` for tokens (K, batch, L) -> (K, batch, L, d),
``readout`` (K, classes, d), and ``state_dicts()`` (one ``constructions.layout`` state dict per model, on CPU).

The packed model runs its block kind's packed forward (``verify.blocks``, ``Training.packed_forward``): the K models
in ONE scan call, the scan pluggable (the kind's ``reference_scan`` in pure torch off CUDA, ``packed_cuda_scan()``,
mamba_ssm's kernel, on CUDA). The module model is one module of the kind's ``cuda_module``.
"""
from __future__ import annotations

import torch


def with_position(hidden: torch.Tensor, position: bool) -> torch.Tensor:
    """The "+PE" input (KEEP n-TH): the last embedding coordinate replaced by the raw 1-based position t, as
    ``constructions.layout.embed`` writes ``Construction.position_channel``."""
    if not position:
        return hidden
    L = hidden.shape[-2]
    t = torch.arange(1, L + 1, device=hidden.device, dtype=hidden.dtype).view(L, 1).expand(*hidden.shape[:-1], 1)
    return torch.cat([hidden[..., :-1], t], dim=-1)


class PackedModel:
    """K models of one shape, parameters stacked on a leading axis, trained in one set of kernel launches."""

    stacked = True
    position = False  # True: the last embedding coordinate is the position (the task's "+PE")

    def __init__(self, mixer, config, inits: list[dict], masks: dict, device, dtype=torch.float32, scan=None):
        self.mixer, self.config, self.K = mixer, config, len(inits)
        self.scan = scan or mixer.reference_scan
        self.params = {k: torch.stack([sd[k] for sd in inits]).to(device, dtype).requires_grad_(True)
                       for k in inits[0]}
        self.masks = {k: torch.stack([m for _ in inits]).to(device, dtype) for k, m in masks.items()}

    @property
    def readout(self) -> torch.Tensor:  # (K, classes, d)
        return self.params["readout.weight"]

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """Mixer output (K, batch, L, d) for tokens (K, batch, L), model k reading tokens[k]."""
        p = self.params
        emb = p["embedding.weight"]  # (K, n_tokens, d)
        hidden = torch.gather(emb, 1, tokens.reshape(self.K, -1, 1).expand(-1, -1, emb.shape[-1]))
        hidden = with_position(hidden.view(*tokens.shape, emb.shape[-1]), self.position)
        mix = {k[len("mixer."):]: v for k, v in p.items() if k.startswith("mixer.")}
        return self.mixer.packed_forward(mix, hidden, self.config, self.scan)

    def state_dicts(self) -> list[dict]:
        return [{k: v[i].detach().cpu().clone() for k, v in self.params.items()} for i in range(self.K)]


class ModuleModel:
    """One real mamba_ssm module (K = 1) with the embedding and readout as plain parameters."""

    stacked = False
    position = False

    def __init__(self, mixer, config, init: dict, masks: dict, device, dtype=torch.float32):
        self.K, self.config, self.mixer = 1, config, mixer
        self.module = mixer.cuda_module(config, device, dtype)
        self.module.load_state_dict({k[len("mixer."):]: v for k, v in init.items() if k.startswith("mixer.")},
                                    strict=True)
        self.emb = init["embedding.weight"].to(device, dtype).requires_grad_(True)
        self.readout_weight = init["readout.weight"].to(device, dtype).requires_grad_(True)
        self.params = {"embedding.weight": self.emb, "readout.weight": self.readout_weight,
                       **{f"mixer.{k}": v for k, v in self.module.named_parameters()}}
        self.masks = {k: m.to(device, dtype) for k, m in masks.items()}

    @property
    def readout(self) -> torch.Tensor:
        return self.readout_weight[None]

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.module(with_position(self.emb[tokens[0]], self.position))[None]

    def state_dicts(self) -> list[dict]:
        return [{k: v.detach().cpu().clone() for k, v in self.params.items()}]

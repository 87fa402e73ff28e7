"""Weights as named blocks: a block's state dict addressed by what its rows, taps and heads mean.

A construction writes ``W.x_proj.B.weight[:, keys] = eye`` instead of slice arithmetic over mamba_ssm's raw layouts
(in tracr's spirit: weights written as named blocks in named bases). Every attribute is a *view* of one tensor of the
state dict, so writing to it writes the weights; ``W.state_dict()`` is the dict in mamba_ssm's own names.

==========================  =================================================================================
``mamba_ssm.Mamba``         ``in_proj.x`` / ``in_proj.z`` (rows [x | z], each ``.weight`` (d_inner, d_model) and
(``MambaWeights``)          ``.bias``); ``conv.tap(lag)`` (d_inner,) the conv weight on token t - lag (lag 0 is
                            the current token), ``conv.bias``; ``x_proj.dt`` / ``.B`` / ``.C`` (rows [dt | B | C]);
                            ``dt_proj.weight`` / ``.bias``; ``A_log``, ``D``; ``out_proj.weight`` / ``.bias``
Mamba-Delta-transpose       the same names; ``dt_proj`` maps to d_state instead of d_inner
``mamba_ssm.Mamba2``        ``in_proj.z0 / x0 / z / x / B / C / dt`` (rows [z0 | x0 | z | x | B | C | dt]; B and C
(``Mamba2Weights``)         hold ``ngroups`` groups of d_state rows: ``in_proj.group("B", g)``); ``conv.tap(lag,
                            "x" | "B" | "C")``; ``dt_bias``, ``A_log``, ``D`` per head; ``out_proj``
Mamba-S4D                   ``in_proj.x`` / ``.z``; ``conv.tap(lag)``; ``dt_bias``, ``A_log``, ``B``, ``C``
(``MambaS4DWeights``)       (d_inner, d_state), ``D``; ``out_proj``
==========================  =================================================================================

``Basis`` names a model's channels (``key[0]``, ``value[3]``...) and returns the slice of a named group.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Rows:
    """Rows of one projection that mean one thing: ``weight`` (rows, in) and ``bias`` (rows,) are views."""

    weight: torch.Tensor
    bias: torch.Tensor | None


class Projection:
    """A linear layer's ``weight`` / ``bias`` with named row blocks: ``P.x`` is ``Rows`` of the rows named x."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, rows: dict[str, slice] | None = None):
        self.weight, self.bias, self._rows = weight, bias, rows or {}

    def __getattr__(self, name: str) -> Rows:
        rows = self.__dict__.get("_rows", {})
        if name not in rows:
            raise AttributeError(f"no row block {name!r}; blocks: {', '.join(rows) or 'none'}")
        return self.block(rows[name])

    def block(self, rows: slice) -> Rows:
        return Rows(self.weight[rows], None if self.bias is None else self.bias[rows])

    def group(self, name: str, g: int, size: int) -> Rows:
        """Group ``g`` of ``size`` rows inside the named block (Mamba-2's B and C groups)."""
        start = self._rows[name].start + g * size
        return self.block(slice(start, start + size))


class Conv:
    """The depthwise causal conv: ``tap(lag, channels)`` is the (channels,) view of the weight on token t - lag."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, channels: dict[str, slice] | None = None):
        self.weight, self.bias, self.channels = weight, bias, channels or {}

    @property
    def width(self) -> int:
        return self.weight.shape[-1]

    def tap(self, lag: int, channels: str | None = None) -> torch.Tensor:
        if not 0 <= lag < self.width:
            raise ValueError(f"conv of width {self.width} has taps for lags 0..{self.width - 1}, got lag={lag}")
        rows = self.channels[channels] if channels is not None else slice(None)
        return self.weight[rows, 0, self.width - 1 - lag]  # mamba_ssm's conv: the last tap is the current token


def _rows(sizes: dict[str, int]) -> dict[str, slice]:
    out, start = {}, 0
    for name, n in sizes.items():
        out[name], start = slice(start, start + n), start + n
    return out


class Weights:
    """A block's state dict (all zero, float64) with named views; subclasses name the blocks."""

    def __init__(self, config, dtype=torch.float64):
        self.config = config
        self._sd = config.zeros(dtype)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._sd

    def _linear(self, name: str, rows: dict[str, slice] | None = None) -> Projection:
        return Projection(self._sd[f"{name}.weight"], self._sd.get(f"{name}.bias"), rows)


class MambaWeights(Weights):
    """``mamba_ssm.Mamba`` (and the Mamba-Delta-transpose mixer, whose dt_proj maps to d_state)."""

    def __init__(self, config, dtype=torch.float64):
        super().__init__(config, dtype)
        di, n, r = config.d_inner, config.d_state, config.rank
        self.in_proj = self._linear("in_proj", _rows({"x": di, "z": di}))
        self.conv = Conv(self._sd["conv1d.weight"], self._sd.get("conv1d.bias"))
        self.x_proj = self._linear("x_proj", _rows({"dt": r, "B": n, "C": n}))
        self.dt_proj = self._linear("dt_proj")
        self.out_proj = self._linear("out_proj")
        self.A_log, self.D = self._sd["A_log"], self._sd["D"]


class Mamba2Weights(Weights):
    """``mamba_ssm.Mamba2``: in_proj rows [z0 | x0 | z | x | B | C | dt], conv over [x | B | C], per-head dt/A/D."""

    def __init__(self, config, dtype=torch.float64):
        super().__init__(config, dtype)
        self.in_proj = self._linear("in_proj", config.in_proj_rows())
        self.conv = Conv(self._sd["conv1d.weight"], self._sd.get("conv1d.bias"), config.conv_channels())
        self.out_proj = self._linear("out_proj")
        self.dt_bias, self.A_log, self.D = self._sd["dt_bias"], self._sd["A_log"], self._sd["D"]

    def group(self, name: str, g: int) -> Rows:
        """Group ``g`` of in_proj's B or C rows (d_state rows each)."""
        return self.in_proj.group(name, g, self.config.d_state)


class MambaS4DWeights(Weights):
    """The Mamba-S4D block: Mamba's in_proj, conv and out_proj around an S4D mixer with input-independent B, C."""

    def __init__(self, config, dtype=torch.float64):
        super().__init__(config, dtype)
        di = config.width
        self.in_proj = self._linear("in_proj", _rows({"x": di, "z": di}))
        self.conv = Conv(self._sd["conv1d.weight"], self._sd.get("conv1d.bias"))
        self.out_proj = self._linear("out_proj")
        self.dt_bias, self.A_log, self.B, self.C, self.D = (self._sd[k] for k in ("dt_bias", "A_log", "B", "C", "D"))


class Basis:
    """Named channels of a model (``key[0]``, ``key[1]``, ``value[0]``...): ``basis["key"]`` is the slice of the
    contiguous group ``key[*]``; ``basis.index("value[3]")`` one channel."""

    def __init__(self, names: list[str]):
        self.names = list(names)
        self._groups: dict[str, slice] = {}
        for i, n in enumerate(self.names):
            group = n.split("[", 1)[0]
            s = self._groups.get(group)
            if s is not None and s.stop != i:
                raise ValueError(f"channel group {group!r} is not contiguous at {n!r}")
            self._groups[group] = slice(s.start if s else i, i + 1)

    def __getitem__(self, group: str) -> slice:
        if group not in self._groups:
            raise KeyError(f"no channel group {group!r}; groups: {', '.join(self._groups)}")
        return self._groups[group]

    def index(self, name: str) -> int:
        return self.names.index(name)

    def __len__(self) -> int:
        return len(self.names)

"""The ``mamba_ssm`` engine: loads a construction's state dict into the mamba_ssm module of its block kind (the kind's
``mamba_ssm`` entry, ``verify.blocks``: ``mamba_ssm.Mamba``, ``mamba_ssm.Mamba2``, or this project's Mamba-S4D and
Mamba-Delta-transpose modules on mamba_ssm's selective scan) on CUDA and runs its kernels.

``mamba_ssm`` is optional (``pip install 'mamba-constructions[gpu]'``); it is imported here only, inside
try/except, as mamba_ssm itself does with causal_conv1d. With causal_conv1d installed ``Mamba`` takes its fused
path (``mamba_inner_fn``); without it, the slow path, which still runs the CUDA ``selective_scan_fn``.
``MambaSSMEngine.hidden_at`` (what ``check_mqar`` calls) runs the query-only form of the block's forward
(``verify.engines.query_only``) on the loaded module's parameters and mamba_ssm's kernels, for the kinds ``mamba``,
``mamba2`` and ``mamba-s4d``: embedding + in_proj folded into a token table, the conv and the scan over every position,
the gate (Mamba-2: gate or gated RMSNorm, gated MLP) and out_proj only at the scored positions.
"""
from __future__ import annotations

import contextlib

import torch

from common.errors import require
from constructions.layout import Construction, embed
from verify import blocks
from verify.engines import query_gate, token_conv
from verify.engines.query_only import (at_positions, in_proj_table, mamba2_forward_at, mamba_forward_at,
                                      mamba_s4d_forward_at, silu_conv)

try:
    from mamba_ssm import Mamba
    # what Mamba.forward calls; causal_conv1d_fn is None without causal_conv1d (Mamba then takes its slow path)
    from mamba_ssm.modules.mamba_simple import causal_conv1d_fn, selective_scan_fn
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined  # what Mamba2.forward's unfused path calls
except ImportError:  # no wheel, or no compiled extension on this machine
    Mamba = causal_conv1d_fn = selective_scan_fn = mamba_chunk_scan_combined = None


class MambaSSMEngine:
    """Runs a construction on its block kind's mamba_ssm module (``BlockKind.mamba_ssm``), strictly loaded, on CUDA.

    ``hidden`` is the module's forward over every position; ``hidden_at`` the query-only form of the same forward
    (exact in real arithmetic, see its docstring), which is what the MQAR check times."""

    name = "mamba_ssm"

    def __init__(self, dtype: str = "float32"):
        require(torch.cuda.is_available(), "engine mamba_ssm needs a CUDA GPU, and torch sees none "
                                           "(use --engine reference on this machine)")
        require(Mamba is not None, "engine mamba_ssm needs the mamba_ssm package with its compiled kernels "
                                   "(pip install 'mamba-constructions[gpu]')")
        require(dtype != "float64", "engine mamba_ssm runs float32, tfloat32, bfloat16 or float16 (its selective-scan kernel "
                                    "has no float64), got float64")
        self.dtype_name, self.device = dtype, torch.device("cuda")
        self.dtype = torch.float32 if dtype == "tfloat32" else getattr(torch, dtype)
        self.fused = causal_conv1d_fn is not None
        self.one_pass = True  # hidden_at: the gather + conv and the query gate as one kernel each where they apply
        self.graphs = True  # hidden_at replays a CUDA graph per construction and shapes (``_replayed``)
        self._cache = self._table = self._graph = None

    @contextlib.contextmanager
    def precision(self):
        """TF32 tensor-core matmuls and convolutions inside (dtype tfloat32), plain float32 otherwise; the flags
        are restored on exit. Checks enter it around their readout too."""
        flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        tf32 = self.dtype_name == "tfloat32"
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags

    def module(self, con: Construction):
        """The block's mamba_ssm module with the construction's weights (``load_state_dict(strict=True)``)."""
        if self._cache is None or self._cache[0] is not con:
            kind = blocks.of(con.config)
            runs = [k.name for k in blocks.KINDS.values() if not isinstance(k.mamba_ssm, str)]
            require(not isinstance(kind.mamba_ssm, str), f"engine mamba_ssm has no module for block kind {kind.name!r} "
                                                         f"(it runs: {', '.join(runs)}); use --engine reference")
            m = kind.mamba_ssm.load(con.config, con.mixer, self.device, self.dtype)
            self._cache = (con, m.eval(), con.embedding.to(self.device, self.dtype))
        return self._cache[1], self._cache[2]

    def hidden(self, con: Construction, tokens: torch.Tensor) -> torch.Tensor:
        _, emb = self.module(con)
        return self.mixer(con, embed(con, emb, tokens.to(self.device)))

    def mixer(self, con: Construction, x: torch.Tensor) -> torch.Tensor:
        """Mixer output (batch, L, d_model) for real-valued inputs x (batch, L, d_model)."""
        m, _ = self.module(con)
        with torch.no_grad(), self.precision():
            return m(x.to(self.device, self.dtype))

    def hidden_at(self, con: Construction, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Mixer output (batch, q, d_model) at positions pos (batch, q) of token ids (batch, L).

        Block kinds "mamba", "mamba2", "mamba-s4d": the kind's query-only form (``verify.engines.query_only``) on the
        loaded module's parameters with mamba_ssm's scan (``selective_scan_fn``; Mamba-2: ``mamba_chunk_scan_combined``
        and the module's RMSNormGated). The table's gather and the conv + SiLU run as one kernel
        (``verify.engines.token_conv``, causal_conv1d's arithmetic, checked against float64 once per process) where
        Triton is available and the construction has no position channel; else the gather, then causal_conv1d's
        channel-first kernel (d_conv <= 4) where installed, else torch's conv1d + SiLU as the modules' own conv
        branch. Mamba's and Mamba-S4D's gate at the query positions runs as one kernel too
        (``verify.engines.query_gate``: torch's gather, lookup and gate bit for bit, self-checked) under the same
        conditions. Exact in real arithmetic; in floating point it differs from the module's forward gathered at pos by the
        summation order of in_proj, the conv and out_proj and the rounding of the gate (``verify.engines.query_only``).
        Repeated shapes replay the forward from a CUDA graph (``_replayed``; ``graphs = False`` runs it eagerly: the
        same values). Other kinds: ``hidden`` gathered."""
        tokens, pos = tokens.to(self.device), pos.to(self.device)
        if con.config.kind not in ("mamba", "mamba2", "mamba-s4d"):
            return at_positions(self.hidden(con, tokens), pos)
        if not self.graphs:
            return self._query_only(con, tokens, pos)
        return self._replayed(con, tokens, pos)

    def _replayed(self, con: Construction, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """``_query_only`` replayed from a CUDA graph: the first call of a (construction, shapes) runs eagerly (Triton
        autotuning and the kernels' self-checks happen there), the second captures the same work into a graph on
        static copies of tokens and pos, later calls copy their inputs in and replay it (one launch for the ~30
        kernels of the forward, whose host-side launches bound the small batches of Mamba-S4D). The replay runs the
        same kernels on the same values, so its output is the eager call's, bit for bit (tested on the GPU); it is
        returned as a copy, as the next replay overwrites the graph's own. Shapes seen once (a check's last, shorter
        batch) never pay for a capture."""
        if self._graph is None or self._graph[0] is not con:
            self._graph = (con, {})
        seen, key = self._graph[1], (tokens.shape, pos.shape)
        entry = seen.get(key)
        if entry is None:
            seen[key] = "seen"
            return self._query_only(con, tokens, pos)
        if entry == "seen":
            entry = seen[key] = self._capture(con, tokens, pos)
        if entry == "eager":
            return self._query_only(con, tokens, pos)
        graph, static_tokens, static_pos, static_out = entry
        static_tokens.copy_(tokens)
        static_pos.copy_(pos)
        graph.replay()
        return static_out.clone()

    def _capture(self, con: Construction, tokens: torch.Tensor, pos: torch.Tensor):
        """(graph, static tokens, static pos, static output) of ``_query_only``, or "eager" where a kernel of the
        forward cannot be captured (the calls then run eagerly: slower, the same values)."""
        static_tokens, static_pos = tokens.clone(), pos.clone()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                static_out = self._query_only(con, static_tokens, static_pos)
        except RuntimeError:
            return "eager"
        return graph, static_tokens, static_pos, static_out

    def _query_only(self, con: Construction, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        kind = con.config.kind
        m, _ = self.module(con)
        params, table = dict(m.named_parameters()), self.table(con)
        conv = _causal_conv1d_silu if self.fused and m.conv1d.weight.shape[-1] <= 4 else silu_conv
        one_pass = self.one_pass_conv(con) if self.one_pass else None
        gate = self._table[3] if self.one_pass and query_gate.available(table) else None
        with torch.no_grad(), self.precision():
            if kind == "mamba":
                return mamba_forward_at(params, table, con, tokens, pos, selective_scan_fn, conv, one_pass, gate)
            if kind == "mamba2":
                return mamba2_forward_at(params, table, con, tokens, pos, mamba_chunk_scan_combined, conv=conv,
                                         norm=m.norm if con.config.rmsnorm else None, token_conv=one_pass)
            return mamba_s4d_forward_at(params, table, con, tokens, pos, selective_scan_fn, conv, one_pass, gate)

    def one_pass_conv(self, con: Construction):
        """``token_conv(rows, tokens, weight, bias, channels_last)`` for ``query_only.conv_rows``: the one-pass kernel
        on the table's rows (``token_conv.rows_conv``, one per construction), or None where it does not apply (no
        Triton, a position channel, a conv wider than 8)."""
        table, m = self.table(con), self.module(con)[0]
        if con.position_channel is not None or not token_conv.available(table, m.conv1d.weight):
            return None
        return self._table[2]

    def table(self, con: Construction) -> torch.Tensor:
        """``in_proj_table`` of the loaded module, computed once per construction."""
        if self._table is None or self._table[0] is not con:
            m, emb = self.module(con)
            with torch.no_grad(), self.precision():
                table = in_proj_table(con, emb, m.in_proj.weight, m.in_proj.bias)
                self._table = (con, table, token_conv.rows_conv(table), query_gate.rows_gate(table))
        return self._table[1]


def _causal_conv1d_silu(x, weight, bias):
    """Mamba.forward's causal_conv1d branch: the fused causal depthwise conv + SiLU kernel."""
    return causal_conv1d_fn(x=x, weight=weight.squeeze(1), bias=bias, activation="silu")


try:
    from mamba_ssm import Mamba2
except ImportError:
    Mamba2 = None


def mamba2_module(config, device, dtype):
    """``mamba_ssm.Mamba2`` on its unfused path (``use_mem_eff_path=False``: conv, then the Triton SSD scan
    ``mamba_chunk_scan_combined``, then RMSNormGated), with its torch conv (``_Mamba2``); the check engine and the
    training build Mamba-2 with it (``verify.blocks.mamba2``)."""
    return _Mamba2(**config.arguments(), use_mem_eff_path=False, device=device, dtype=dtype)


class _Mamba2(Mamba2 or object):
    """``mamba_ssm.Mamba2`` (same parameters and state dict) that always takes its own ``nn.Conv1d`` + SiLU branch
    for the depthwise conv. With causal_conv1d installed mamba_ssm would call its channel-last kernel, which rejects
    many of the shapes here ("channel dimension divisible by 8", "strides multiples of 8", seen on H100 for the
    constructions and for training shapes); mamba_ssm takes the torch branch only when causal_conv1d is absent. The
    SSD scan (``mamba_chunk_scan_combined``) and everything else are mamba_ssm's."""

    def forward(self, u, *args, **kwargs):
        import mamba_ssm.modules.mamba2 as mod

        saved, mod.causal_conv1d_fn = mod.causal_conv1d_fn, None
        try:
            return super().forward(u, *args, **kwargs)
        finally:
            mod.causal_conv1d_fn = saved

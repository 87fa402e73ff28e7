"""The measurements stored for figures, as command lines: ``python -m experiments.<name>`` from the repository root.

* ``recall_grid``: the designed hashing circuit's recall over Koren et al.'s D-N grids (CPU, resumable), and the
  multi-layer / multi-head tables (``results/recall_scaling``);
* ``recall_grid_gpu``: the same grid through ``mamba_ssm.Mamba`` (GPU; resumable);
* ``haar_rates``: Corollary 1's error vs N, Haar vs S4D (``results/corollary1_error_vs_N.json``);
* ``sensitivity``: Lemmas 1-2 and the KEEP n-TH memory experiment (``results/keep_nth_memory.json``);
* ``key_dim``: the typical-case key dimension of Theorem 3's construction (JSON lines on stdout).

Each module holds the experiment's settings, flags and output writing; the measurement functions are in ``verify``
(``verify.recall_grid``, ``verify.haar_rates``, ``verify.sensitivity``, ``verify.key_dim``). Exit codes, flag checks,
progress and strict JSON come from ``verify.cli_support``: 0 done, 2 bad input (one line), 3 internal error, 130
interrupted. A stored result is never replaced silently: a resumable grid resumes only a file of the same settings,
and any other existing result needs ``--overwrite``.
"""

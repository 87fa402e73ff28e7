"""KEEP n-TH is out of reach of every linear time-invariant model with a position bias (S4D, S4D+PE).

Setting (Huang et al. 2025, Sec. 3.4 and Tables A.2 / A.4): tokens x_1..x_T i.i.d. uniform over V, target x_n at
every position t = n..T, accuracy the mean over those T - n + 1 positions of [argmax of the logits = x_n]. The
paper's S4D and S4D+PE models (embedding -> S4D -> linear readout, no conv, no gate; +PE: the embedding's last
coordinate replaced by t) are linear and time-invariant in the token embeddings, and the position coordinate enters
as a token-independent term, so their logits at t are

    l_t(v) = sum_{tau=0}^{t-1} M_tau(v, x_{t-tau}) + beta_t(v)        (*)

for lag maps M_tau (V x V, shared by every t: time invariance) and position biases beta_t. A nonlinearity applied
coordinate by coordinate before anything mixes the position coordinate into the token coordinates (the SiLU of a
Mamba-style block whose in_proj is frozen at the identity) keeps this form; one applied after such a mix (a trained
in_proj) does not.

**Lemma (two positions).** For any model of the form (*), any n >= 2 and n <= t < T, the accuracies a_t, a_{t+1} at
positions t and t + 1 satisfy

    a_t + a_{t+1} <= 3/2 + 1/(2|V|).

Proof. Let X be a sequence and X' = (x_2, .., x_T, x_fresh) its shift, which has the same law. The window X' shows
at t (lags 0..t-1: x_{t+1}, .., x_2) is the window X shows at t + 1 without its lag t (x_1), so
l^X_{t+1}(v) = l^{X'}_t(v) + phi(v) with phi(v) = M_t(v, x_1) + beta_{t+1}(v) - beta_t(v), a function of v and x_1
only. X' is right at t when its argmax is x'_n = x_{n+1}; X is right at t + 1 when its argmax is x_n. If both hold
and x_n != x_{n+1}, then phi(x_n) > phi(x_{n+1}): adding the two argmax inequalities gives phi(x_n) >= phi(x_{n+1}),
and with equality x_n and x_{n+1} tie at the maximum in both, where one fixed order of V (argmax takes the lowest
index) cannot pick x_{n+1} in one and x_n in the other. Given x_1, the pair (x_n, x_{n+1}) is exchangeable (positions
n, n + 1 > 1), so P[phi(x_n) > phi(x_{n+1})] = P[phi(x_{n+1}) > phi(x_n)] <= (1 - 1/|V|) / 2. Hence
P[both right] <= (1 - 1/|V|)/2 + P[x_n = x_{n+1}] = 1/2 + 1/(2|V|), and a_t + a_{t+1} = P[X' right at t] +
P[X right at t + 1] <= 1 + P[both right]. QED

**Lemma (a block of positions).** The same holds for any k <= n consecutive scored positions t, .., t + k - 1: with
N the number of them the model gets right, for every set S of s of them

    P[all of S right] <= c_s = P_s / s! + (1 - P_s),    P_s = prod_{i<s} (1 - i/|V|)  (the s targets distinct),

and so E[N] <= B_k(|V|), the largest E[N] of a distribution of N on {0..k} with E[binom(N, s)] <= binom(k, s) c_s
for s = 2..k (a linear program; ``block_bound`` solves it exactly). Proof. Shift X by j = 0..k-1: X^(j) at position
t + k - 1 - j has the law of X at that position, its target is x_{n+j}, and its window is a common part (tokens
x_k.., at lags that do not depend on j) plus lags whose tokens are x_{j+1}..x_{k-1}: scores F(v) + Phi_j(v), with
F common and Phi_j a function of v and x_1..x_{k-1} only. Let all of S be right, targets y_j = x_{n+j} distinct.
For every permutation sigma of S, summing F(y_j) + Phi_j(y_j) >= F(y_sigma(j)) + Phi_j(y_sigma(j)) over j cancels F:
the assignment j -> y_j maximises sum_j Phi_j(y_sigma(j)). It is the only maximiser: where another sigma ties, every
summed inequality is an equality, so y_sigma(j) ties y_j at the maximum of score j and the argmax's fixed order puts
y_j before y_sigma(j) for every j that sigma moves, which no cycle of sigma allows. Given x_1..x_{k-1} the targets
are i.i.d., so each of the s! assignments is the unique maximiser with the same probability, at most P_s / s!; the
targets collide with probability 1 - P_s. For k = 2 this is the first lemma (B_2 = 3/2 + 1/(2|V|)). QED

**Corollary.** Splitting the m = T - n + 1 scored positions into runs of at most n consecutive ones, the mean
accuracy of any model (*) is at most

    A(T, n, |V|) = min over splits of (sum of B_k over the runs) / m;

A(10, 5, 128) = 17401/24576 = 0.708 (runs of 4 and 2), A(20, 5, 128) = 0.676, A(30, 5, 128) = 0.669 (exact
rationals from ``mean_accuracy_bound``). Table A.2
prints 0.79-0.99 for S4D+PE at T = 10 in all nine (d, N) cells and 0.72-0.73 (standard error 0.01) at T = 20 and
T = 30 for d = 32: values no model of the class the paper states can reach, whatever its size or training. Selective
models are not of the form (*) (their Delta depends on the token), which is how Mamba+PE solves the task
(Corollary 2, ``symbolic/corollary2.py``).

The pair lemma is tight. With tokens 0..|V|-1 and c > 2|V|: M_0 = c I, M_1 = (c - 1) I, every other M_tau = 0,
beta_t = 0 but beta_{n+1}(v) = 2v. At t = n the current token x_n scores c and beats every other (a_n = 1); at
t = n + 1, x_n scores c - 1 + 2 x_n against x_{n+1}'s c + 2 x_{n+1} and wins iff x_n >= x_{n+1}, so
a_{n+1} = 1/2 + 1/(2|V|) (checked by enumeration in ``tests/test_keep_nth_lti.py``). Whether B_k is reached for
k > 2 is not known; it is an upper bound.
"""
from __future__ import annotations

from functools import cache

import sympy as sp


def pair_bound(vocab) -> sp.Expr:
    """3/2 + 1/(2|V|): the most a_t + a_{t+1} can be for a model of the form (*)."""
    return sp.Rational(3, 2) + sp.Rational(1, 2) / sp.sympify(vocab)


def intersection_bound(s: int, vocab) -> sp.Expr:
    """c_s: the most P[s given positions of one block all right] can be (the block lemma)."""
    distinct = sp.Mul(*[1 - sp.Rational(i) / vocab for i in range(1, s)])
    return distinct / sp.factorial(s) + 1 - distinct


@cache  # an exact LP: solved once per (k, |V|)
def block_bound(k: int, vocab) -> sp.Expr:
    """B_k(|V|): the most E[N] can be over k <= n consecutive positions, the exact optimum of the linear program
    max E[N] s.t. E[binom(N, s)] <= binom(k, s) c_s (s = 2..k) over distributions of N on {0..k}."""
    from sympy.solvers.simplex import lpmax

    p = sp.symbols(f"p0:{k + 1}")
    constraints = [sp.Add(*p) <= 1, *(q >= 0 for q in p)]
    constraints += [sp.Add(*(sp.binomial(m, s) * p[m] for m in range(k + 1))) <= sp.binomial(k, s)
                    * intersection_bound(s, vocab) for s in range(2, k + 1)]
    return lpmax(sp.Add(*(m * p[m] for m in range(k + 1))), constraints)[0]


@cache
def mean_accuracy_bound(T: int, n: int, vocab) -> sp.Expr:
    """A(T, n, |V|): the most the mean accuracy over positions n..T can be for a model of the form (*): the best
    split of the T - n + 1 positions into runs of at most n (dynamic programming over the run lengths)."""
    m = T - n + 1
    blocks = {k: block_bound(k, vocab) for k in range(1, min(n, m) + 1)}
    best = [sp.Integer(0)] + [None] * m
    for length in range(1, m + 1):
        best[length] = min(best[length - k] + b for k, b in blocks.items() if k <= length)
    return best[m] / m

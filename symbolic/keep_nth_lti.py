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

**Corollary.** Pairing the T - n + 1 scored positions (n, n+1), (n+2, n+3), .. (one left alone when their number is
odd, at most 1), the mean accuracy of any model (*) is at most

    A(T, n, |V|) = (floor(m/2) (3/2 + 1/(2|V|)) + (m mod 2)) / m,    m = T - n + 1;

A(10, 5, 128) = 385/512 = 0.752. Table A.2 prints 0.79-0.99 for S4D+PE at T = 10 in all nine (d, N) cells: values
no model of the class the paper states can reach, whatever its size or training. The bound says nothing against
T >= 20 (the paper's values there are at most 0.73). Selective models are not of the form (*) (their Delta depends
on the token), which is how Mamba+PE solves the task (Corollary 2, ``symbolic/corollary2.py``).

The lemma is tight. With tokens 0..|V|-1 and c > 2|V|: M_0 = c I, M_1 = (c - 1) I, every other M_tau = 0,
beta_t = 0 but beta_{n+1}(v) = 2v. At t = n the current token x_n scores c and beats every other (a_n = 1); at
t = n + 1, x_n scores c - 1 + 2 x_n against x_{n+1}'s c + 2 x_{n+1} and wins iff x_n >= x_{n+1}, so
a_{n+1} = 1/2 + 1/(2|V|) (checked by enumeration in ``tests/test_keep_nth_lti.py``).
"""
from __future__ import annotations

import sympy as sp


def pair_bound(vocab) -> sp.Expr:
    """3/2 + 1/(2|V|): the most a_t + a_{t+1} can be for a model of the form (*)."""
    return sp.Rational(3, 2) + sp.Rational(1, 2) / sp.sympify(vocab)


def mean_accuracy_bound(T, n, vocab) -> sp.Expr:
    """A(T, n, |V|): the most the mean accuracy over positions n..T can be for a model of the form (*)."""
    m = sp.sympify(T) - n + 1
    return (sp.floor(m / 2) * pair_bound(vocab) + sp.Mod(m, 2)) / m

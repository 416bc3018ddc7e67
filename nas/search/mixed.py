"""The mixed op of a categorical decision: architecture logits alpha, Gumbel-softmax weights, freezing.

Modes while training:
- ``soft``: convex combination of the sampled Gumbel-softmax weights over every live candidate
  (the paper's); a frozen decision computes only its chosen candidate.
- ``soft-all``: the reference code's behaviour, kept for benchmarks: every candidate of every decision is
  computed every step, a frozen one weighted by its one-hot vector.
- ``hard``: straight-through one-hot sample: only the sampled candidate is computed, its output is
  multiplied by the (forward 1) hard weight so gradients still reach alpha.
``weighting`` ``sigmoid`` (Fair DARTS, soft mode) replaces the softmax by an independent relaxed-Bernoulli gate per
candidate. A planned *path* (the single-path warm-up) computes one candidate at full weight, alpha untouched.
In eval mode the argmax (or the frozen choice) is computed alone, or, while ``mixture`` is set (perturbation-based
selection), the mixture of the candidates with those weights.
A candidate that is ``None`` (``none``) contributes nothing; ``forward`` returns None when no candidate
contributed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from trcnas.nas.schema import MODES  # the config schema owns the choices


def sample_gumbel(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard Gumbel noise shaped like ``logits`` (``generator`` must live on the logits' device)."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=torch.float32)
    e = (-torch.log(u.clamp_min(1e-20))).clamp_min(1e-20)  # Exp(1) sample
    return (-torch.log(e)).to(logits.dtype)


def relaxed_bernoulli(logits: torch.Tensor, tau: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Independent relaxed Bernoulli (binary concrete) gates: sigmoid((logits + logistic noise) / tau)."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=torch.float32)
    u = u.clamp(1e-6, 1 - 1e-6)
    return torch.sigmoid((logits + (torch.log(u) - torch.log1p(-u)).to(logits.dtype)) / tau)


def gumbel_softmax(logits: torch.Tensor, tau: float, hard: bool = False,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """softmax((logits + G) / tau); with ``hard`` the straight-through one-hot of its argmax."""
    y = torch.softmax((logits + sample_gumbel(logits, generator)) / tau, dim=-1)
    if not hard:
        return y
    one_hot = torch.zeros_like(y).scatter_(-1, y.argmax(-1, keepdim=True), 1.0)
    return one_hot - y.detach() + y


class MixedOp(nn.Module):
    def __init__(self, name: str, candidates: Sequence[str], ops: Sequence[nn.Module | None]):
        super().__init__()
        if len(candidates) != len(ops) or not candidates:
            raise ValueError(f"decision {name}: candidates and ops differ in number or are empty")
        self.name = name
        self.candidates = list(candidates)
        self.ops = nn.ModuleList([op if op is not None else nn.Identity() for op in ops])
        self.is_none = [op is None for op in ops]
        self.alpha = nn.Parameter(torch.zeros(len(candidates)))
        self.register_buffer("frozen_index", torch.tensor(-1, dtype=torch.long))
        self._frozen = -1  # host mirror of frozen_index: the forward branches on it without a device sync
        self._planned: tuple[torch.Tensor, int] | None = None  # (hard weights, index) sampled by the controller
        self.mode = "soft"
        self.weighting = "softmax"  # or "sigmoid" (Fair DARTS gates)
        self.mixture: torch.Tensor | None = None  # eval-mode candidate weights (perturbation-based selection)
        self._path: int | None = None  # a single candidate at full weight for the next training forward
        self.tau = 1.0
        self.generator: torch.Generator | None = None  # set by the search controller; None: global RNG
        self.last_computed: list[str] = []  # names of the candidates the last forward computed (for tests)
        self.decision = None  # the space's Decision it was built from (MixedOp.of)

    @classmethod
    def of(cls, decision, ops: Sequence[nn.Module | None]) -> MixedOp:
        """The mixed op of a space's ``Decision`` (its name and candidates, in the space's order): how every
        model builds its searchable ops, so a mixed op and its decision can never disagree."""
        op = cls(decision.name, list(decision.candidates), ops)
        op.decision = decision
        return op

    # -- state ---------------------------------------------------------------------------------------
    @property
    def frozen(self) -> bool:
        return self._frozen >= 0

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._frozen = int(self.frozen_index)

    def probabilities(self) -> torch.Tensor:
        return torch.softmax(self.alpha.detach().float(), dim=-1)

    def chosen(self) -> str:
        i = self._frozen if self.frozen else int(self.alpha.detach().argmax())
        return self.candidates[i]

    def freeze(self, index: int | None = None) -> None:
        i = int(self.alpha.detach().argmax()) if index is None else index
        self.frozen_index.fill_(i)
        self._frozen = i

    def mixture_weights(self) -> torch.Tensor:
        """The supergraph's deterministic candidate weights: softmax(alpha), or sigmoid(alpha) per candidate."""
        a = self.alpha.detach().float()
        return torch.sigmoid(a) if self.weighting == "sigmoid" else torch.softmax(a, dim=-1)

    def plan_path(self, index: int) -> None:
        """Compute only candidate ``index``, unweighted, in the next training forward (alpha gets no gradient)."""
        self._path = index

    def plan(self, weights: torch.Tensor, index: int) -> None:
        """Use these straight-through hard weights (and host index) in the next training forward."""
        self._planned = (weights, index)

    def margin(self) -> float:
        p = self.probabilities().sort(descending=True).values
        return float(p[0] - p[1]) if len(p) > 1 else 1.0

    def entropy(self) -> torch.Tensor:
        logp = torch.log_softmax(self.alpha, dim=-1)
        return -(logp.exp() * logp).sum()

    # -- forward -------------------------------------------------------------------------------------
    def _run(self, i: int, fn: Callable):
        self.last_computed.append(self.candidates[i])
        return None if self.is_none[i] else fn(self.ops[i])

    def selection(self) -> list[tuple[int, torch.Tensor | None]]:
        """Which candidates the next forward computes and their weights (None: unweighted), following the
        mode, the freeze state and train/eval. A decision shared by several places in a network (e.g. one
        fusion op for every mTEB) takes one selection per forward and ``apply``s it at each place."""
        n = len(self.candidates)
        if self.training and not self.frozen and self._path is not None:
            i, self._path = self._path, None
            return [(i, None)]
        if self.mode == "soft-all" and self.training:
            if self.frozen:
                w = torch.zeros_like(self.alpha).scatter_(0, self.frozen_index.view(1), 1.0)
            else:
                w = gumbel_softmax(self.alpha, self.tau, generator=self.generator)
            return [(i, w[i]) for i in range(n)]
        if not self.training and not self.frozen and self.mixture is not None:
            return [(i, self.mixture[i]) for i in range(n) if not self.is_none[i] and float(self.mixture[i]) != 0]
        if self.frozen or not self.training:
            return [(self._frozen if self.frozen else int(self.alpha.detach().argmax()), None)]
        if self.mode == "hard":
            if self._planned is not None:
                (w, i), self._planned = self._planned, None
            else:  # sampled here: costs a device sync for the host index
                w = gumbel_softmax(self.alpha, self.tau, hard=True, generator=self.generator)
                i = int(w.detach().argmax())
            return [(i, w[i])]
        if self.weighting == "sigmoid":
            w = relaxed_bernoulli(self.alpha, self.tau, generator=self.generator)
        else:
            w = gumbel_softmax(self.alpha, self.tau, generator=self.generator)
        return [(i, w[i]) for i in range(n) if not self.is_none[i]]

    def apply(self, selection: list[tuple[int, torch.Tensor | None]], fn: Callable[[nn.Module], object]):
        """Weighted sum of ``fn(op)`` over a selection; outputs may be tensors or dicts of tensors."""
        self.last_computed = []
        out = None
        for i, w in selection:
            y = self._run(i, fn)
            if y is None:
                continue
            if w is not None:
                y = _scale(y, w)
            out = y if out is None else _add(out, y)
        return out

    def forward(self, fn: Callable[[nn.Module], object]):
        """``fn(op)`` computes one candidate's output; the mixed op decides which to compute and how to weigh."""
        return self.apply(self.selection(), fn)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, candidates={self.candidates}, mode={self.mode}"


def _scale(y, w):
    if isinstance(y, dict):
        return {k: v * w.to(v.dtype) for k, v in y.items()}
    return y * w.to(y.dtype)


def _add(a, b):
    if isinstance(a, dict):
        return {k: a[k] + b[k] for k in a}
    return a + b


def mixed_ops(model: nn.Module) -> list[MixedOp]:
    return [m for m in model.modules() if isinstance(m, MixedOp)]


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(weights, alphas) from module registration: every parameter lands in exactly one group."""
    alpha_ids = {id(m.alpha) for m in mixed_ops(model)}
    weights, alphas = [], []
    for p in model.parameters():
        (alphas if id(p) in alpha_ids else weights).append(p)
    return weights, alphas


def set_mode(model: nn.Module, mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
    for m in mixed_ops(model):
        m.mode = mode


def set_weighting(model: nn.Module, weighting: str) -> None:
    for m in mixed_ops(model):
        m.weighting = weighting


def zero_one_loss(model: nn.Module) -> torch.Tensor | None:
    """Fair DARTS' zero-one loss: minus the mean squared distance of the live decisions' sigmoid gates (of the
    candidates that compute something) from 1/2, so each gate is pushed to 0 or 1. None when nothing is live."""
    gates = [torch.sigmoid(m.alpha)[[i for i, none in enumerate(m.is_none) if not none]]
             for m in mixed_ops(model) if not m.frozen]
    gates = [g for g in gates if g.numel()]
    if not gates:
        return None
    return -torch.cat(gates).sub(0.5).pow(2).mean()


def set_tau(model: nn.Module, tau: float) -> None:
    for m in mixed_ops(model):
        m.tau = tau


def entropy_loss(model: nn.Module) -> torch.Tensor | None:
    """Mean entropy of softmax(alpha) over *all* decisions, frozen ones included as constants (as the
    reference does), so the pressure per live decision does not grow as decisions freeze. None once every
    decision is frozen."""
    ops = mixed_ops(model)
    if all(m.frozen for m in ops):
        return None
    return torch.stack([m.entropy().detach() if m.frozen else m.entropy() for m in ops]).mean()


def plan_hard_samples(ops: list[MixedOp], tau: float, generator: torch.Generator | None = None) -> None:
    """One straight-through hard Gumbel sample for every live decision at once, with a single device->host
    copy of the chosen indices (instead of one per decision)."""
    live = [m for m in ops if not m.frozen]
    if not live:
        return
    width = max(len(m.candidates) for m in live)
    logits = torch.stack([nn.functional.pad(m.alpha, (0, width - len(m.candidates)), value=float("-inf"))
                          for m in live])
    w = gumbel_softmax(logits, tau, hard=True, generator=generator)
    for m, row, i in zip(live, w, w.detach().argmax(-1).tolist()):
        m.plan(row[: len(m.candidates)], i)

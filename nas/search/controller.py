"""The search plugin of the training loop: alpha optimiser (Adam), temperature and entropy schedules,
freezing, and the alpha history / freeze event logs. Works for any space built from MixedOps."""

from __future__ import annotations

from collections.abc import Callable

import torch

from trcnas.nas.engine.loop import LoopPlugin
from trcnas.nas.schema import SearchSection
from trcnas.nas.search.mixed import (
    MixedOp,
    entropy_loss,
    mixed_ops,
    plan_hard_samples,
    set_mode,
    set_tau,
    set_weighting,
    split_parameters,
    zero_one_loss,
)
from trcnas.nas.search.schedules import Schedule


class ArchitectureSearch(LoopPlugin):
    kind = "search"

    def __init__(self, model: torch.nn.Module, search_cfg: SearchSection, seed: int = 0):
        self.model = model
        # architecture samples come from their own generator: independent of data and dropout randomness,
        # identical on every data-parallel rank, and checkpointed with the search
        self.seed = seed
        self.generator: torch.Generator | None = None
        self._generator_state: torch.Tensor | None = None
        self.ops: list[MixedOp] = mixed_ops(model)
        if not self.ops:
            raise ValueError("the model has no searchable decision (no MixedOp)")
        set_mode(model, search_cfg.mode)
        self.mode = search_cfg.mode
        set_weighting(model, search_cfg.weights)
        self.zero_one = float(search_cfg.zero_one)
        # perturbation-based and one-shot selection decide every decision after the search: nothing freezes
        self.freezing = search_cfg.selection == "alpha"
        self.warmup_paths = search_cfg.warmup == "paths"
        self.paths_only = search_cfg.selection == "evaluation"  # single-path training for the whole search
        # single paths and probes (every candidate on its own) leave alpha out of the whole search
        self.alpha_free = self.paths_only or search_cfg.selection == "probes"
        _, alphas = split_parameters(model)
        self.alpha_opt = torch.optim.Adam(alphas, lr=search_cfg.alpha_lr,
                                          weight_decay=search_cfg.alpha_weight_decay)
        self.tau = Schedule.from_cfg(search_cfg.tau)
        self.entropy_weight = Schedule.from_cfg(search_cfg.entropy)
        self.threshold = float(search_cfg.freeze_threshold)
        # steps that train only the weights: alphas stay put (Adam's moments still warm up) and nothing freezes,
        # so candidates that start as identity (zero-initialised gates) are judged once they have learnt
        self.warmup = int(search_cfg.alpha_warmup)
        self.alpha_lr = float(search_cfg.alpha_lr)
        self.stop_when_frozen = bool(search_cfg.stop_when_frozen)
        # alpha_data heldout: the loss of the held-out batch of a step (set by the search run before its first step);
        # the alphas are stepped on it in before_step, not on the training loss
        self.heldout = search_cfg.alpha_data == "heldout"
        self.heldout_loss: Callable[[int], torch.Tensor] | None = None
        self._alpha_log: dict = {}
        self.events: list[dict] = []  # freeze events
        self.history: list[dict] = []  # one row per step: tau, entropy weight, probabilities
        self._pending: list[tuple[int, float, float, torch.Tensor]] = []  # on-device snapshots, flushed lazily

    def optimizers(self):
        return [] if self.heldout else [self.alpha_opt]

    def _ensure_generator(self) -> None:
        device = self.ops[0].alpha.device
        if self.generator is None or self.generator.device != device:
            self.generator = torch.Generator(device=device).manual_seed(self.seed)
            if self._generator_state is not None:
                self.generator.set_state(self._generator_state)
            for m in self.ops:
                m.generator = self.generator

    def before_step(self, step, total):
        self._ensure_generator()
        for g in self.alpha_opt.param_groups:
            g["lr"] = 0.0 if step < self.warmup or self.alpha_free else self.alpha_lr
        tau = self.tau(step, total)
        set_tau(self.model, tau)
        if self.paths_only or (step < self.warmup and self.warmup_paths):  # one uniform candidate per decision
            live = [m for m in self.ops if not m.frozen]
            if live:
                draws = (torch.rand(len(live), generator=self.generator, device=self.generator.device)
                         * torch.tensor([len(m.candidates) for m in live], device=self.generator.device))
                for m, i in zip(live, draws.long().tolist()):
                    m.plan_path(i)
        elif self.mode == "hard":
            plan_hard_samples(self.ops, tau, self.generator)
        if self.heldout and step >= self.warmup and not self.alpha_free:
            if any(not m.frozen for m in self.ops):
                self._alpha_step(step, total)
            else:  # every decision is final: no held-out batch is spent (frozen stays frozen, so none is skipped)
                self._alpha_log = {}

    def _alpha_step(self, step: int, total: int) -> None:
        """One alpha step on the held-out batch of ``step`` and the regularisers (first-order DARTS). Its backward
        leaves gradients on the weights too; the weight step zeroes them before its own backward."""
        if self.heldout_loss is None:
            raise RuntimeError("search.alpha_data heldout: the search run sets heldout_loss before the first step")
        loss = self.heldout_loss(step)
        extra, self._alpha_log = self._regularisers(step, total)
        if extra is not None:
            loss = loss + extra
        self.alpha_opt.zero_grad(set_to_none=True)
        if loss.requires_grad:  # every decision frozen to a parameter-free candidate leaves nothing to step
            loss.backward()
            self.alpha_opt.step()
        self._alpha_log["alpha_loss"] = loss.detach()  # held-out objective + regularisers

    def extra_loss(self, step, total):
        """The regularisers added to the training loss (single-level); with held-out alpha steps they went into
        the alpha step's loss, and only their logged values come back."""
        if self.heldout:
            return None, {"tau": self.tau(step, total), "entropy_weight": self.entropy_weight(step, total),
                          **self._alpha_log}
        return self._regularisers(step, total)

    def _regularisers(self, step: int, total: int) -> tuple[torch.Tensor | None, dict]:
        w = self.entropy_weight(step, total)
        h = entropy_loss(self.model)
        log = {"tau": self.tau(step, total), "entropy_weight": w}
        loss = None
        if h is not None:
            loss, log["entropy"] = w * h, h.detach()
        z = zero_one_loss(self.model) if self.zero_one > 0 else None
        if z is not None:
            loss = self.zero_one * z if loss is None else loss + self.zero_one * z
            log["zero_one"] = z.detach()
        return loss, log

    def after_step(self, step, total):
        # one small device->host copy per step (the freeze rule needs the margins); nothing else syncs
        probs = [torch.softmax(m.alpha.detach().float(), -1) for m in self.ops]
        self._pending.append((step, self.tau(step, total), self.entropy_weight(step, total), probs))
        top2 = [p.topk(min(2, len(p))).values for p in probs]
        margins = torch.stack([t[0] - t[1] if len(t) > 1 else t.new_ones(()) for t in top2]).tolist()
        for m, margin in zip(self.ops, margins):
            if self.freezing and step >= self.warmup and not m.frozen and margin >= self.threshold:
                m.freeze()
                self.events.append({"step": step, "decision": m.name, "choice": m.chosen(),
                                    "probability": self.probabilities_of(m)[m.chosen()], "margin": margin})
        return {"frozen": sum(m.frozen for m in self.ops)}

    def live_scalars(self) -> dict[str, float]:
        """The number of decisions and each candidate's probability after the last step (``prob/<decision>/<c>``)."""
        out = {"decisions": float(len(self.ops))}
        if self._pending:
            for m, p in zip(self.ops, self._pending[-1][3]):
                out.update({f"prob/{m.name}/{c}": v for c, v in zip(m.candidates, p.tolist())})
        return out

    def finished(self) -> bool:
        """With ``search.stop_when_frozen``: every decision is frozen, so no later step can change the
        architecture."""
        return self.stop_when_frozen and all(m.frozen for m in self.ops)

    @staticmethod
    def probabilities_of(m: MixedOp) -> dict[str, float]:
        return dict(zip(m.candidates, m.probabilities().tolist()))

    def flush(self) -> list[dict]:
        for step, tau, w, probs in self._pending:
            row = {"step": step, "tau": tau, "entropy_weight": w}
            for m, p in zip(self.ops, probs):
                for c, v in zip(m.candidates, p.tolist()):
                    row[f"{m.name}:{c}"] = v
            self.history.append(row)
        self._pending = []
        return self.history

    def state_dict(self):
        self.flush()
        gen = self.generator.get_state() if self.generator is not None else self._generator_state
        return {"alpha_opt": self.alpha_opt.state_dict(), "events": self.events, "history": self.history,
                "generator": gen}

    def load_state_dict(self, state):
        self.alpha_opt.load_state_dict(state["alpha_opt"])
        self._generator_state = state.get("generator")
        self.generator = None  # rebuilt from the state at the next step
        self.events = list(state["events"])
        self.history = list(state["history"])

    def decisions(self) -> dict[str, dict]:
        """Per decision: chosen candidate, probabilities, frozen step (or None)."""
        frozen_at = {e["decision"]: e["step"] for e in self.events}
        return {m.name: {"choice": m.chosen(), "probabilities": self.probabilities_of(m),
                         "frozen_at_step": frozen_at.get(m.name)} for m in self.ops}

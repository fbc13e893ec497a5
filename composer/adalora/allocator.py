"""AdaLoRA's rank allocation during training, as PEFT 0.21's `RankAllocator` and `update_and_allocate`.

After each optimiser step (gradients still present): the sensitivity |p · ∂L/∂p| of every A, E and B entry is
smoothed (EMA beta1) with its uncertainty (EMA beta2); a triplet's importance is its E score plus the mean scores
of its A row and B column. The budget (triplets kept over all sites) stays at init_r per site for `tinit` steps,
falls cubically to target_r per site, and holds for the last `tfinal` steps; every `deltaT` steps (and once at
total - tfinal) the least important triplets' E is set to zero, and after that the final mask is reapplied each
step. `TrainingHooks` is how `composer.training.fit` drives it, and how its state rides in checkpoints.
"""

from __future__ import annotations

from typing import Any

import torch

from composer.adalora.modules import AdaLoraAdapter
from composer.errors import ConfigError


class RankAllocator:
    def __init__(self, module: AdaLoraAdapter):
        self.module, self.cfg = module, module.cfg
        self.names = sorted(module.sites)
        self.init_bgt = sum(module.sites[n].lora_E.shape[0] for n in self.names)
        self.target_bgt = self.cfg.target_r * len(self.names)
        self.ipt: dict[str, torch.Tensor] = {}
        self.unc: dict[str, torch.Tensor] = {}
        self.mask: dict[str, torch.Tensor] | None = None  # the last allocation: site -> kept [r]

    def _params(self) -> dict[str, torch.Tensor]:
        return {
            f"{n}.{p}": getattr(self.module.sites[n], p) for n in self.names for p in ("lora_A", "lora_E", "lora_B")
        }

    def budget(self, step: int, total: int) -> tuple[int, bool]:
        tinit, tfinal = self.cfg.tinit, self.cfg.tfinal
        if step <= tinit:
            return self.init_bgt, False
        if step > total - tfinal:
            return self.target_bgt, True
        mul = 1 - (step - tinit) / (total - tfinal - tinit)
        return int((self.init_bgt - self.target_bgt) * (mul**3) + self.target_bgt), step % self.cfg.deltaT == 0

    def update_importance(self) -> None:
        b1, b2 = self.cfg.beta1, self.cfg.beta2
        with torch.no_grad():
            for key, p in self._params().items():
                if p.grad is None:
                    continue
                ipt = (p * p.grad).abs()
                if key not in self.ipt:
                    self.ipt[key], self.unc[key] = torch.zeros_like(p), torch.zeros_like(p)
                self.ipt[key] = b1 * self.ipt[key] + (1 - b1) * ipt
                self.unc[key] = b2 * self.unc[key] + (1 - b2) * (ipt - self.ipt[key]).abs()

    def scores(self) -> dict[str, torch.Tensor]:
        """Per site, each triplet's importance [r]."""
        out = {}
        for n in self.names:
            s = {p: self.ipt[f"{n}.{p}"] * self.unc[f"{n}.{p}"] for p in ("lora_A", "lora_E", "lora_B")}
            ab = torch.cat([s["lora_A"].mean(dim=1, keepdim=True), s["lora_B"].mean(dim=0).view(-1, 1)], dim=1)
            out[n] = s["lora_E"].view(-1) + ab.sum(dim=1)
        return out

    def mask_to_budget(self, budget: int) -> None:
        if not self.ipt or budget >= self.init_bgt:
            return
        scores = self.scores()
        threshold = torch.kthvalue(torch.cat([scores[n] for n in self.names]), k=self.init_bgt - budget)[0].item()
        self.mask = {n: scores[n] > threshold for n in self.names}
        self.apply_mask()

    def apply_mask(self) -> None:
        if self.mask is None:
            return
        with torch.no_grad():
            for n in self.names:
                self.module.sites[n].lora_E.masked_fill_(~self.mask[n].view(-1, 1), 0.0)

    def update_and_allocate(self, step: int, total: int) -> None:
        """PEFT's `update_and_allocate(global_step)`, `step` counting from 0."""
        final = total - self.cfg.tfinal
        if step < final:
            self.update_importance()
            budget, now = self.budget(step, total)
            if now:
                self.mask_to_budget(budget)
        elif step == final:
            self.mask_to_budget(self.budget(step, total)[0])
            self.ipt, self.unc = {}, {}
        else:
            self.apply_mask()

    def kept(self) -> dict[str, torch.Tensor]:
        """What the saved adapter keeps: the last allocation at the target budget (forced now if training
        stopped before it), else every triplet whose E is not zero."""
        if self.mask is None or sum(int(m.sum()) for m in self.mask.values()) > self.target_bgt:
            self.mask_to_budget(self.target_bgt)
        if self.mask is not None:
            return self.mask
        return {n: self.module.sites[n].lora_E.detach().view(-1) != 0 for n in self.names}


class TrainingHooks:
    """What `fit` calls around each step of an AdaLoRA: the penalty added to the loss, the allocation after the
    optimiser step, and the allocator's state for checkpoints."""

    def __init__(self, module: AdaLoraAdapter):
        self.module = module
        self.allocator = RankAllocator(module)

    def check(self, total: int) -> None:
        cfg = self.module.cfg
        if cfg.tinit + cfg.tfinal >= total:
            raise ConfigError(
                f"tinit + tfinal ({cfg.tinit} + {cfg.tfinal}) must leave steps for the budget to fall; this job "
                f"trains {total} steps"
            )

    def penalty(self) -> torch.Tensor:
        return self.module.cfg.orth_reg_weight * self.module.orthogonality()

    def after_step(self, step: int, total: int) -> None:
        self.allocator.update_and_allocate(step, total)

    def state(self) -> dict[str, Any]:
        a = self.allocator
        return {"ipt": a.ipt, "unc": a.unc, "mask": a.mask}

    def load_state(self, state: dict[str, Any]) -> None:
        """A checkpoint's allocator state, on the adapter's device (checkpoints hold CPU tensors)."""
        a = self.allocator
        dev = next(self.module.parameters()).device
        a.ipt = {k: v.to(dev) for k, v in state["ipt"].items()}
        a.unc = {k: v.to(dev) for k, v in state["unc"].items()}
        a.mask = {k: v.to(dev) for k, v in state["mask"].items()} if state["mask"] is not None else None

    def saved(self) -> tuple[Any, dict[str, torch.Tensor]]:
        """The config and tensors the trained adapter is saved as: pruned to its kept triplets."""
        return self.module.pruned(self.allocator.kept())

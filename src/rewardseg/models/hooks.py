"""mmengine hooks used by rewardseg configs."""
from __future__ import annotations

import math

import torch
from mmengine.hooks import Hook
from mmseg.registry import HOOKS


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Stop training with an error naming the iteration when the loss is NaN or inf.

    Runs before the checkpoint hook, so the broken weights are never saved.
    """

    priority = "ABOVE_NORMAL"

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if not outputs or "loss" not in outputs:
            return
        value = float(outputs["loss"])
        if not math.isfinite(value):
            parts = ", ".join(f"{k}={float(v):.4g}" for k, v in outputs.items()
                              if k != "loss" and "loss" in k)
            raise FloatingPointError(
                f"non-finite training loss {value} at iteration {runner.iter + 1}"
                + (f" ({parts})" if parts else "")
                + "; stopping before the weights are saved (lower the learning rate or "
                  "check the data)")


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Save the RNG states in checkpoints and restore them when training resumes.

    mmengine re-seeds on resume but does not restore the generator states, so dropout
    masks and the reward losses' samples would differ from an uninterrupted run. The
    torch generators (CPU, CUDA) are restored just before the first resumed
    iteration; numpy and ``random`` are left to mmengine, whose data-loader fast-forward
    already replays them. Validation is made RNG-neutral (the torch state is put back
    after it: building the val loader's iterator draws from the global generator), so a
    run resumed from a checkpoint saved just before a validation matches one that ran it.
    """

    priority = "VERY_HIGH"

    def __init__(self):
        self._pending = None
        self._before_val = None

    @staticmethod
    def _state():
        state = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    @staticmethod
    def _restore(state):
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            if len(state["cuda"]) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(state["cuda"])

    def before_val(self, runner) -> None:
        self._before_val = self._state()

    def after_val(self, runner) -> None:
        if self._before_val is not None:
            self._restore(self._before_val)
            self._before_val = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint["rewardseg_rng"] = self._state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._pending = checkpoint.get("rewardseg_rng")

    def before_train(self, runner) -> None:
        state, self._pending = self._pending, None
        if state is None or runner.iter == 0:  # a plain load_from: keep this seed's RNG
            return
        self._restore(state)


__all__ = ["NonFiniteLossHook", "RNGStateHook"]

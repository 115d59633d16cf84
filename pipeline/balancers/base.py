"""The interface every balancer implements, its declaration, and the helpers they share."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


class Balancer:
    """A gradient-balancing method as an interchangeable part of the trainer (BalanceBenchmark's
    shape). The trainer calls, every training step, after `loss.backward()` and before
    `optimizer.step()`:

        info = balancer.before_step(model, optimizer, out, batch, losses, epoch)

    where `out` is the model's forward output, `losses` the dict of loss terms of this step and
    `epoch` is 0-based. A balancer may rescale the `.grad` of `model.modality_parameters()[m]`
    (e.g. CP), or the learning rate of the optimizer's per-modality parameter groups (SGM; the
    trainer's groups carry the modality they belong to, `group["modality"]`: a fine-tuned text
    backbone and the text encoder's new layers are two groups of modality "text"; "shared" has
    None; train.param_groups). It returns a
    dict of floats to log (coefficients, Shapley values...). `active(epoch)` says whether it acts
    in that epoch (the trainer logs it).
    """

    name = "none"

    def active(self, epoch: int) -> bool:
        return False

    def backward(self, model, losses: dict, epoch: int) -> None:
        """Turn the step's loss terms into gradients. Methods that need per-term gradients
        override this; the trainer calls it only while `active(epoch)`."""
        sum(losses.values()).backward()

    def before_step(self, model, optimizer, out, batch, losses, epoch) -> dict[str, float]:
        return {}

    def scales(self, modality: str | None) -> bool:
        """Whether it rescales the updates of a parameter group of this modality (None: the
        shared group, which no balancer touches); `pipeline explain` shows it per group."""
        return modality is not None and self.name != "none"


def scale_group_lr(optimizer, coeffs: dict[str, float]) -> None:
    """lr of every parameter group of modality m = its base lr x coeffs[m]; other groups keep
    the base (a group without "modality" is taken to be the modality it is named after).

    The update-side modulation used under Adam, whose normaliser cancels any gradient scale
    (m_hat / sqrt(v_hat) is invariant to a constant factor on g): scaling the group's lr scales
    the step itself. The base rate is remembered in the group ("base_lr") for `reset_group_lr`.
    """
    names = {_modality(g) for g in optimizer.param_groups}
    missing = sorted(m for m, k in coeffs.items() if k != 1.0 and m not in names)
    if missing:
        raise ValueError(f"the optimizer has no parameter group of modality {missing} (groups: "
                         f"{sorted(str(n) for n in names)}); build it with train.param_groups")
    for group in optimizer.param_groups:
        base = group.setdefault("base_lr", group["lr"])
        group["lr"] = base * coeffs.get(_modality(group), 1.0)


def _modality(group: dict):
    return group["modality"] if "modality" in group else group.get("name")


def reset_group_lr(optimizer) -> None:
    """Every group back to its base learning rate."""
    for group in optimizer.param_groups:
        group["lr"] = group.setdefault("base_lr", group["lr"])


@dataclass(frozen=True)
class BalancerSpec:
    """A balancer's one declaration (`SPEC` in its module): the rest of the pipeline derives from
    it its config section and the `balancer:` values allowed (pipeline/config.py), the keys a run
    depends on (pipeline/effective.py), the checks (pipeline/config_checks.py), what PaSE builds
    for it (pipeline/models/pase.py), its variant on PaSE's backbone (pipeline/variants.py) and
    its rows and labels in the report (Table 3, the diagnostics)."""

    name: str                   # params.yaml `balancer:` value
    display: str                # its name in tables and figures
    build: Callable             # (cfg, task) -> Balancer
    order: int                  # its place among the balancers (tables, variants)
    section: str | None = None  # its params.yaml section ...
    params: type | None = None  # ... and that section's dataclass (the schema's)
    # refuse a setting that would make it inert: (section, epochs, variant) -> None or raise
    # ConfigError; called with epochs=None for the section alone (every run), else per variant
    check: Callable | None = None
    unimodal_heads: str | None = None  # what it needs from PaSE: None | "detached" | "live"
    variant: str | None = None  # the variant that runs it on PaSE's backbone with SGM off
    summary: str = ""           # what it does, for Table 3's caption


def epoch_window_check(section: str, name: str) -> Callable:
    """The check of a 1-based, inclusive epoch window `<section>.start_epoch .. end_epoch`."""
    from pipeline.errors import ConfigError

    def check(p, epochs: int | None = None, variant: str | None = None) -> None:
        if epochs is None and p.end_epoch is not None and p.end_epoch < p.start_epoch:
            raise ConfigError(f"{section}.end_epoch: {p.end_epoch} is before {section}.start_epoch "
                              f"{p.start_epoch}: the window (1-based, inclusive) is empty, so the "
                              f"balancer would never act; allowed: {section}.end_epoch >= "
                              f"{section}.start_epoch, or null (to the last epoch)")
        if epochs is not None and p.start_epoch > epochs:
            raise ConfigError(
                f"{section}.start_epoch: {p.start_epoch} with train.epochs: {epochs}: the {name} "
                f"window starts after the last epoch, so variant {variant!r} would train without "
                "it; allowed: a start within the run's epochs")
    return check

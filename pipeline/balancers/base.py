"""The interface every balancer implements, and the helpers they share."""
from __future__ import annotations


class Balancer:
    """A gradient-balancing method as an interchangeable part of the trainer (BalanceBenchmark's
    shape). The trainer calls, every training step, after `loss.backward()` and before
    `optimizer.step()`:

        info = balancer.before_step(model, optimizer, out, batch, losses, epoch)

    where `out` is the model's forward output, `losses` the dict of loss terms of this step and
    `epoch` is 0-based. A balancer may rescale the `.grad` of `model.modality_parameters()[m]`
    (OGM-GE, CP), or the learning rate of the optimizer's per-modality parameter groups (SGM; the
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
        (MMPareto) override this; the trainer calls it only while `active(epoch)`."""
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

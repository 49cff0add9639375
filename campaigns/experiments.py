"""Who is in a campaign's control group, and which variant the others get.

Assignment is a pure function of ``(salt, campaign id, device id)``: a keyed
BLAKE2b hash, so every worker, every restart and every replay gives a device
the same arm with no state to share or store.

The rule (what changes when the experiment is edited):

- **Holdout.** A device is held out when its holdout draw ``u`` (uniform in
  [0, 1), from the hash of ``salt|campaign|device|holdout``) is below the
  holdout share. Raising the share from 10% to 20% only adds devices to the
  control group; lowering it only releases some.
- **Variants.** Every other device takes the variant with the smallest
  ``-ln(u_v) / weight_v``, where ``u_v`` hashes the variant's *id*
  (weighted rendezvous hashing: variant ``v`` wins with probability
  ``weight_v / sum of weights``). Declaration order plays no part. Adding a
  variant moves devices only *into* the new variant (its share of them), never
  from one existing variant to another; removing one spreads only its devices
  over the others; changing one weight only moves devices to or from that
  variant. The holdout draw is independent of the variant draws, so changing
  variants never touches the control group.
- ``salt`` (default: the campaign id) re-draws everything when changed: use a
  new salt for a new experiment on the same campaign.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

import numpy as np

from campaigns.model import Campaign, Experiment, OfferTemplate

HOLDOUT = "holdout"
"""The arm name of the control group."""

_SCALE = float(2**64)


def _draw(salt: str, campaign_id: str, device_id: str, part: str) -> float:
    """A uniform draw in (0, 1) from the hash of its four parts."""
    digest = hashlib.blake2b(
        f"{campaign_id}\x1f{device_id}\x1f{part}".encode(), digest_size=8, key=salt.encode()[:64]
    ).digest()
    return (int.from_bytes(digest, "big") + 0.5) / _SCALE


def _salt(campaign_id: str, experiment: Experiment) -> str:
    return experiment.salt or campaign_id


def arm(campaign: Campaign, device_id: str) -> str | None:
    """``"holdout"``, the id of the device's variant, or ``None`` (no experiment, or no variants:
    the campaign's own offer)."""
    exp = campaign.experiment
    if exp is None:
        return None
    salt = _salt(campaign.id, exp)
    if exp.holdout > 0 and _draw(salt, campaign.id, device_id, HOLDOUT) < exp.holdout:
        return HOLDOUT
    if not exp.variants:
        return None
    best, best_score = None, math.inf
    for v in exp.variants:
        score = -math.log(_draw(salt, campaign.id, device_id, "variant:" + v.id)) / v.weight
        if score < best_score:
            best, best_score = v.id, score
    return best


def arms(campaign: Campaign, device_ids: Iterable[str]) -> np.ndarray:
    """:func:`arm` for many devices: an object array of ``"holdout"``, variant ids or ``None``."""
    ids = list(device_ids)
    out = np.empty(len(ids), dtype=object)
    out[:] = [arm(campaign, d) for d in ids]
    return out


def offer_for(campaign: Campaign, variant_id: str | None) -> OfferTemplate:
    """The offer template of a variant (the campaign's own one without variants)."""
    exp = campaign.experiment
    if exp is not None and variant_id is not None:
        for v in exp.variants:
            if v.id == variant_id:
                return v.offer
    return campaign.offer


def shares(campaign: Campaign) -> dict[str, float]:
    """The expected share of devices per arm (``holdout`` and each variant, or ``offer``)."""
    exp = campaign.experiment
    if exp is None:
        return {"offer": 1.0}
    treated = 1.0 - exp.holdout
    out = {HOLDOUT: exp.holdout} if exp.holdout > 0 else {}
    if not exp.variants:
        out["offer"] = treated
        return out
    total = sum(v.weight for v in exp.variants)
    for v in exp.variants:
        out[v.id] = treated * v.weight / total
    return out


__all__ = ["HOLDOUT", "arm", "arms", "offer_for", "shares"]

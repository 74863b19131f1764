"""The optimizer, with one named parameter group per trained part, restored group by group.

The NOA and the latent projector are separate groups ("model", "projector"), so a resume can
switch L_latent on (the projector group starts fresh) or off (its group is left behind)
while the NOA's Adam moments carry over exactly. Checkpoints before format 3 kept both parts
in one unnamed group, model parameters first; they are split by position.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from noa.errors import NoaError


def build_optimizer(parts: dict[str, nn.Module], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over ``parts`` (name -> module), one group each, in the given order."""
    groups = [{"params": list(module.parameters()), "name": name} for name, module in parts.items()]
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


def _saved_groups(saved: dict[str, Any], sizes: dict[str, int]) -> dict[str, tuple[dict[str, Any], list[int]]]:
    """Saved groups by name: (hyper-parameters, saved parameter ids). Unnamed legacy groups
    are split by position into the parts named in ``sizes`` (model first)."""
    out: dict[str, tuple[dict[str, Any], list[int]]] = {}
    for group in saved["param_groups"]:
        ids = list(group["params"])
        if "name" in group:
            out[group["name"]] = (group, ids)
            continue
        for name, size in sizes.items():  # legacy: one group, parts concatenated in order
            if ids:
                out[name], ids = (group, ids[:size]), ids[size:]
    return out


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> list[str]:
    """Load ``saved`` into ``optimizer`` group by group; returns the names of groups that start
    fresh (absent from ``saved``). A group whose parameter count differs is an error."""
    current = optimizer.state_dict()
    sizes = {group["name"]: len(group["params"]) for group in current["param_groups"]}
    by_name = _saved_groups(saved, sizes)
    state: dict[int, Any] = {}
    groups, fresh = [], []
    for group in current["param_groups"]:
        name = group["name"]
        if name not in by_name:
            fresh.append(name)
            groups.append(group)
            continue
        saved_group, saved_ids = by_name[name]
        if len(saved_ids) != len(group["params"]):
            raise NoaError(
                f"the checkpoint's optimizer state for the {name} has {len(saved_ids)} parameters, the {name} "
                f"now has {len(group['params'])}; the architecture differs, so fine-tune with --init-from instead"
            )
        for new_id, old_id in zip(group["params"], saved_ids):
            if old_id in saved["state"]:
                state[new_id] = saved["state"][old_id]
        groups.append({**saved_group, "params": group["params"], "name": name})
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    return fresh

"""Parameter groups for reporting G-effects per part of the network.

Every parameter the G-effect is taken over belongs to exactly one named group, so the total is the
sum of the groups:

* `embed`    — the input embedding (`model.get_input_embeddings()`).
* blocks     — the decoder blocks (`...layers.<i>.`, `...h.<i>.`, `...blocks.<i>.`), either in k equal
               contiguous buckets (`blocks=3` → `shallow`, `middle`, `deep`, the paper's figure grouping;
               other k → `blocks_00-03`, …) or one group per block (`blocks="each"` → `block_00`, …).
* `norm`     — the final norm (a norm-named module outside the blocks: `model.norm`, `ln_f`, …).
* `lm_head`  — the unembedding (`model.get_output_embeddings()`).
* `other`    — anything matching none of these (e.g. learned position embeddings). It is an explicit
               group, never silently merged into a neighbour (the authors' code reused the previous
               parameter's key for such tensors, methods.md B.3).

Tied embeddings: the input and output embedding are one tensor, counted once, in a group named
`embed+lm_head` (its aliases are kept in `ParamGroups.aliases`). Only parameters with
`requires_grad=True` are grouped by default (a LoRA model: the adapters); frozen ones are listed in
`ParamGroups.frozen`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterator

import torch

BLOCK_RE = re.compile(r"(?:^|\.)(?:layers|h|blocks|block)\.(\d+)\.")
NORM_RE = re.compile(r"(?:^|\.)(?:norm|ln_f|final_layer_norm|final_layernorm|final_norm)\.")
THREE = ("shallow", "middle", "deep")
TIED = "embed+lm_head"


@dataclass
class ParamGroups:
    """Group name of each parameter (by its first name in `named_parameters()`), groups in model order."""

    names: list[str]
    assignment: dict[str, str]
    aliases: dict[str, list[str]] = field(default_factory=dict)
    frozen: list[str] = field(default_factory=list)
    n_blocks: int = 0

    def members(self, group: str) -> list[str]:
        return [p for p, g in self.assignment.items() if g == group]

    def parameters(self, model: torch.nn.Module) -> Iterator[tuple[str, str, torch.Tensor]]:
        """(name, group, parameter) for every grouped parameter, each shared tensor once."""
        for name, p in model.named_parameters():
            if name in self.assignment:
                yield name, self.assignment[name], p

    def sizes(self, model: torch.nn.Module) -> dict[str, int]:
        out = dict.fromkeys(self.names, 0)
        for _, g, p in self.parameters(model):
            out[g] += p.numel()
        return out


def block_group_names(n_blocks: int, blocks: int | str) -> list[str]:
    """Group name of each block index under the bucketing `blocks` (k buckets, or "each")."""
    if blocks == "each":
        width = len(str(max(n_blocks - 1, 0)))
        return [f"block_{i:0{max(width, 2)}d}" for i in range(n_blocks)]
    if isinstance(blocks, str):
        if not blocks.isdigit():
            raise ValueError(f"blocks={blocks!r}: expected a number of buckets (e.g. 3) or 'each'")
        blocks = int(blocks)
    if not 1 <= blocks <= max(n_blocks, 1):
        raise ValueError(f"blocks={blocks}: the model has {n_blocks} decoder blocks, so the number of buckets "
                         f"must be in 1..{n_blocks} (or 'each')")
    bucket = [i * blocks // n_blocks for i in range(n_blocks)]
    if blocks == 3:
        return [THREE[b] for b in bucket]
    spans: dict[int, list[int]] = {}
    for i, b in enumerate(bucket):
        spans.setdefault(b, []).append(i)
    width = max(2, len(str(n_blocks - 1)))
    label = {b: f"blocks_{ix[0]:0{width}d}-{ix[-1]:0{width}d}" for b, ix in spans.items()}
    return [label[b] for b in bucket]


def _ids(module) -> set[int]:
    return {id(p) for p in module.parameters()} if module is not None else set()


def parameter_groups(model: torch.nn.Module, blocks: int | str = 3, trainable_only: bool = True) -> ParamGroups:
    """Assign every (trainable) parameter of `model` to one group; see the module docstring."""
    get_in = getattr(model, "get_input_embeddings", None)
    get_out = getattr(model, "get_output_embeddings", None)
    embed_ids = _ids(get_in() if get_in else None)
    head_ids = _ids(get_out() if get_out else None)

    by_id: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(p), []).append(name)
    block_of: dict[str, int] = {}
    for name, _ in model.named_parameters():
        m = BLOCK_RE.search(name)
        if m:
            block_of[name] = int(m.group(1))
    n_blocks = max(block_of.values()) + 1 if block_of else 0
    block_names = block_group_names(n_blocks, blocks) if n_blocks else []

    assignment: dict[str, str] = {}
    aliases: dict[str, list[str]] = {}
    frozen: list[str] = []
    for name, p in model.named_parameters():
        if trainable_only and not p.requires_grad:
            frozen.append(name)
            continue
        names = by_id[id(p)]
        if len(names) > 1:
            aliases[name] = names[1:]
        in_embed, in_head = id(p) in embed_ids, id(p) in head_ids
        if in_embed and in_head:
            group = TIED
        elif in_embed:
            group = "embed"
        elif in_head:
            group = "lm_head"
        elif name in block_of:
            group = block_names[block_of[name]]
        elif NORM_RE.search(name):
            group = "norm"
        else:
            group = "other"
        assignment[name] = group
    order = ["embed", TIED] + list(dict.fromkeys(block_names)) + ["norm", "lm_head", "other"]
    present = set(assignment.values())
    return ParamGroups(names=[g for g in order if g in present], assignment=assignment, aliases=aliases,
                       frozen=frozen, n_blocks=n_blocks)

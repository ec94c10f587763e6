"""Reference quantities (π_ref = θ_ini) that objectives ask for, behind one small interface.

An objective never runs the reference model itself; it calls a provider:

    ref.forget_logprobs(forget_batch)        -> SequenceLogprobs   (NPO, TNPO, WTNPO, IdK-DPO)
    ref.forget_logits(forget_batch)          -> (B, T, V) logits   (UNDIAL)
    ref.idk_logprobs(idk_batch)              -> SequenceLogprobs   (IdK-DPO)
    ref.retain_logits(retain_batch)          -> (B, T, V) logits   (retain='kl')
    ref.hidden_states(batch, layer)          -> (B, T, H)          (RMU's retain='hidden': output of block ℓ)

Three providers, all returning detached tensors:
* `FrozenModelReference(model)`: runs a frozen copy of θ_ini under `torch.no_grad()`.
* `DisabledAdapterReference(peft_model)`: the trained LoRA model with its adapters switched off
  (`with peft_model.disable_adapter():`), so no second copy of the base weights is needed.
* `CachedReference(forget=..., idk=..., fallback=...)`: forget/IdK log-probs precomputed once per dataset
  `index` (see `precompute_token_logprobs`; the trainer stores them on disk); anything else goes to
  `fallback`. The forget data is fixed, so its reference log-probs never need a second forward pass.

Which one a run gets is decided in one place, `build_reference`, from what the objective declares it asks
for (`Objective.reference_needs()`): log-prob tables where the caller computed them, and for anything a
table cannot serve (logits, hidden states) a separate frozen θ_ini, or the trained LoRA model with its
adapters disabled, or (when the caller allows it) a frozen copy of the model before training.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Protocol, Sequence, runtime_checkable

import torch

from ..logprobs import IGNORE, SequenceLogprobs, model_forward, sequence_logprobs


@runtime_checkable
class ReferenceProvider(Protocol):
    def forget_logprobs(self, batch: dict) -> SequenceLogprobs: ...

    def idk_logprobs(self, batch: dict) -> SequenceLogprobs: ...

    def forget_logits(self, batch: dict) -> torch.Tensor: ...

    def retain_logits(self, batch: dict) -> torch.Tensor: ...

    def hidden_states(self, batch: dict, layer: int) -> torch.Tensor: ...


def decoder_blocks(model) -> torch.nn.ModuleList:
    """The model's decoder blocks (`model.model.layers` for Llama-style models), found through peft and
    DDP/FSDP wrappers (the Trainer passes the wrapped model to `compute_loss` under data parallelism).

    The block list is the `nn.ModuleList` with `config.num_hidden_layers` entries: that is what WMDP and
    open-unlearning index when they name RMU's layer, whatever attribute path a model family uses.
    """
    inner = model
    while not hasattr(inner, "config") and isinstance(getattr(inner, "module", None), torch.nn.Module):
        inner = inner.module  # DistributedDataParallel / FSDP keep the model as `.module`
    n = getattr(getattr(inner, "config", None), "num_hidden_layers", None)
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and n is not None and len(module) == n:
            return module
    raise ValueError(f"{type(model).__name__}: found no nn.ModuleList of config.num_hidden_layers={n} decoder "
                     f"blocks, so a layer index cannot be resolved; RMU and hidden-state references need a "
                     f"decoder-only transformer")


_PENDING = [0]  # block_output calls waiting for their forward pass (forward caches must really run then)


def block_output_pending() -> bool:
    """True inside `block_output`'s forward: a cache of model outputs (geffect's SharedForward) must not answer."""
    return _PENDING[0] > 0


class _StopAfterBlock(Exception):
    """Raised by `block_output`'s hook once φ_ℓ is captured: nothing after block ℓ is needed."""


def block_output(model, batch: dict, layer: int) -> torch.Tensor:
    """φ_ℓ = the output of decoder block ℓ (`model.layers[ℓ]`, 0-based), read by a forward hook on that block.

    Block-index semantics, as WMDP's RMU and open-unlearning hook `model.layers[ℓ]`. It is *not*
    `outputs.hidden_states[ℓ]` (that is the block's input: index 0 holds the embeddings), and the last
    block's output is not in `hidden_states` at all (transformers puts the final-norm output there).
    The forward stops once block ℓ has run (the hook raises `_StopAfterBlock`): the blocks after it and the
    LM head cannot change φ_ℓ (RMU at ℓ = 7 of SmolLM2's 30 blocks skips three quarters of each forward).
    Under DDP/FSDP the whole model runs, so the wrapper sees a normal forward; gradients flow as usual.
    """
    blocks = decoder_blocks(model)
    if not 0 <= layer < len(blocks):
        raise ValueError(f"layer={layer}: the model has {len(blocks)} decoder layers, so layer must be in "
                         f"0..{len(blocks) - 1} (ℓ = output of model.layers[ℓ], as WMDP and open-unlearning)")
    captured: list[torch.Tensor] = []
    wrapped = isinstance(model, torch.nn.parallel.DistributedDataParallel) or \
        type(model).__name__ == "FullyShardedDataParallel"

    def hook(_module, _args, output):
        captured.append(output[0] if isinstance(output, tuple) else output)
        if not wrapped:
            raise _StopAfterBlock

    handle = blocks[layer].register_forward_hook(hook)
    _PENDING[0] += 1
    try:
        outputs = model_forward(model, batch)
    except _StopAfterBlock:
        outputs = None
    finally:
        _PENDING[0] -= 1
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError(f"decoder block {layer} ran {len(captured)} times in one forward pass (expected once); "
                           f"was the forward served from a cache (e.g. geffect's SharedForward after an earlier "
                           f"call on the same batch)?")
    if isinstance(model, torch.nn.parallel.DistributedDataParallel) and torch.is_grad_enabled():
        # DDP expects a gradient for every parameter its forward's outputs reach (the blocks after ℓ and the
        # LM head); a loss on the hooked activation alone leaves theirs missing and the gradient all-reduce
        # incomplete. A zero-weighted tie to one logit puts every parameter in the graph (that logit depends on
        # all of them) with an exact-zero gradient, without reducing (or copying) the full-vocabulary logits.
        return captured[0] + 0.0 * outputs.logits[..., :1, :1].sum()
    return captured[0]


class _ModelReference:
    """Runs a model without gradients inside `self._context()`."""

    model: torch.nn.Module

    def _context(self):
        return contextlib.nullcontext()

    def _logprobs(self, batch: dict) -> SequenceLogprobs:
        with torch.no_grad(), self._context():
            return sequence_logprobs(self.model, batch)

    def forget_logprobs(self, batch: dict) -> SequenceLogprobs:
        return self._logprobs(batch)

    def idk_logprobs(self, batch: dict) -> SequenceLogprobs:
        return self._logprobs(batch)

    def _logits(self, batch: dict) -> torch.Tensor:
        with torch.no_grad(), self._context():
            return model_forward(self.model, batch).logits

    def forget_logits(self, batch: dict) -> torch.Tensor:
        return self._logits(batch)

    def retain_logits(self, batch: dict) -> torch.Tensor:
        return self._logits(batch)

    def hidden_states(self, batch: dict, layer: int) -> torch.Tensor:
        with torch.no_grad(), self._context():
            return block_output(self.model, batch, layer)


class FrozenModelReference(_ModelReference):
    """A separate frozen θ_ini (put in eval mode here, so dropout is off). Never pass the model being trained."""

    def __init__(self, model: torch.nn.Module):
        self.model = model.eval()


class DisabledAdapterReference(_ModelReference):
    """The peft model being trained, scored with its adapters disabled: the base weights are θ_ini."""

    def __init__(self, peft_model):
        if not hasattr(peft_model, "disable_adapter"):
            raise TypeError(f"DisabledAdapterReference needs a peft model (with .disable_adapter()), got "
                            f"{type(peft_model).__name__}; for a plain model use FrozenModelReference(copy)")
        self.model = peft_model

    def _context(self):
        return self.model.disable_adapter()


class CachedReference:
    """Reference log-probs looked up by the batch's `index` column.

    `forget` / `idk`: index → 1-D tensor of the reference's answer-token log-probs, in order (a dict, or
    a sequence indexed by position), as `precompute_token_logprobs` returns. Other quantities, and
    missing caches, go to `fallback` (a model-backed provider) or raise.
    """

    def __init__(self, forget: Mapping[int, torch.Tensor] | Sequence[torch.Tensor] | None = None,
                 idk: Mapping[int, torch.Tensor] | Sequence[torch.Tensor] | None = None,
                 fallback: ReferenceProvider | None = None):
        self.forget = forget
        self.idk = idk
        self.fallback = fallback

    def forget_logprobs(self, batch: dict) -> SequenceLogprobs:
        if self.forget is None:
            return self._fallback("forget_logprobs").forget_logprobs(batch)
        return scatter_cached(self.forget, batch, "forget")

    def idk_logprobs(self, batch: dict) -> SequenceLogprobs:
        if self.idk is None:
            return self._fallback("idk_logprobs").idk_logprobs(batch)
        return scatter_cached(self.idk, batch, "idk")

    def forget_logits(self, batch: dict) -> torch.Tensor:
        return self._fallback("forget_logits").forget_logits(batch)

    def retain_logits(self, batch: dict) -> torch.Tensor:
        return self._fallback("retain_logits").retain_logits(batch)

    def hidden_states(self, batch: dict, layer: int) -> torch.Tensor:
        return self._fallback("hidden_states").hidden_states(batch, layer)

    def _fallback(self, what: str) -> ReferenceProvider:
        if self.fallback is None:
            raise ValueError(f"CachedReference has no cache for {what} and no fallback model: pass "
                             f"fallback=FrozenModelReference(...) or DisabledAdapterReference(...)")
        return self.fallback


def answer_label_mask(labels: torch.Tensor) -> torch.Tensor:
    """(B, T-1) mask of shifted labels that are answer tokens: the mask `logprobs_from_logits` builds."""
    return labels[:, 1:] != IGNORE


def scatter_cached(cache, batch: dict, split: str = "forget") -> SequenceLogprobs:
    """Place each row's cached answer-token log-probs at that row's answer positions (any padding side)."""
    if "index" not in batch:
        raise ValueError(f"CachedReference needs the dataset 'index' column in the {split} batch (QADataset "
                         f"items carry it and pad_batch keeps it); it was missing")
    mask = answer_label_mask(batch["labels"])
    out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    for row, idx in enumerate(batch["index"].tolist()):
        try:
            values = cache[idx]
        except (KeyError, IndexError):
            raise ValueError(f"CachedReference: no cached {split} log-probs for index {idx}; the cache was built "
                             f"from another dataset") from None
        n = int(mask[row].sum())
        if values.numel() != n:
            raise ValueError(f"CachedReference: {split} index {idx} has {values.numel()} cached answer tokens but the "
                             f"batch has {n}; the cache is stale (tokenizer, prompt format or max_length changed): "
                             f"rebuild it")
        out[row, mask[row]] = values.to(out)
    return SequenceLogprobs(token_logprobs=out, mask=mask)


def precompute_token_logprobs(ref: ReferenceProvider, batches: Iterable[dict], split: str = "forget"
                              ) -> dict[int, torch.Tensor]:
    """index → the reference's answer-token log-probs (1-D, CPU), for `CachedReference`."""
    get = ref.forget_logprobs if split == "forget" else ref.idk_logprobs
    cache: dict[int, torch.Tensor] = {}
    for batch in batches:
        if "index" not in batch:
            raise ValueError("precompute_token_logprobs needs batches with the dataset 'index' column")
        slp = get(batch)
        for row, idx in enumerate(batch["index"].tolist()):
            cache[idx] = slp.token_logprobs[row][slp.mask[row]].detach().cpu()
    return cache


#: reference quantities a log-prob table can serve, and the split each is cached for
CACHEABLE = {"forget_logprobs": "forget", "idk_logprobs": "idk"}


def cached_splits(objective) -> list[str]:
    """The splits ('forget', 'idk') whose reference log-probs `objective` reads: the tables worth precomputing."""
    needs = objective.reference_needs()
    return [split for call, split in CACHEABLE.items() if call in needs]


def reference_tables(provider: ReferenceProvider, batches: Mapping[str, Iterable[dict]]) -> dict[str, dict]:
    """In-memory log-prob tables {split: {index: token log-probs}} of `provider` over each split's batches."""
    return {split: precompute_token_logprobs(provider, b, split) for split, b in batches.items()}


@dataclass
class Reference:
    """What `build_reference` chose: the provider an objective's `loss` gets, and, for the run's record, the
    quantities declared, the tables used, and where the rest comes from."""

    provider: ReferenceProvider | None
    needs: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    model: str | None = None  # None | "ref_model" | "disabled adapters" | "frozen copy of θ_ini"

    def record(self) -> dict:
        return {"calls": self.needs, "cached": self.cached, "model": self.model}


def _shares_trainable(frozen: torch.nn.Module, trained: torch.nn.Module) -> bool:
    trainable = {id(p) for p in trained.parameters() if p.requires_grad}
    return frozen is trained or any(id(p) in trainable for p in frozen.parameters())


def build_reference(objective, trained: torch.nn.Module, *, frozen: torch.nn.Module | None = None,
                    tables: Mapping[str, object] | None = None, copy_trained: bool = False) -> Reference:
    """The one reference policy: the provider `objective.loss(trained, batch, ref)` gets.

    `tables`: precomputed log-probs per split ({'forget': ..., 'idk': ...}) the caller computed from θ_ini
    (`reference_tables`, or the trainer's on-disk `reference_cache`). What the objective needs beyond them
    (`reference_needs()` minus the tables) comes from, in order: `frozen` (a separate θ_ini, e.g. a ref_model);
    the trained model's disabled LoRA adapters (a peft model); a frozen deep copy of `trained` taken now,
    before training, when `copy_trained`. Passing the model being trained as `frozen` is refused: its
    "reference" would move with every step. Returns a `Reference` (provider None when nothing is needed).
    """
    needs = sorted(objective.reference_needs())
    if not needs:
        return Reference(None)
    if frozen is not None and _shares_trainable(frozen, trained):
        raise ValueError(f"objective {objective.name!r}: the reference model is the model being trained (or shares "
                         f"its trainable weights), so π_ref would move with every step; pass a separate frozen "
                         f"θ_ini (e.g. a copy taken before training), or frozen=None to use disabled LoRA adapters")
    tables = {k: v for k, v in (tables or {}).items() if v is not None}
    served = {call for call, split in CACHEABLE.items() if split in tables}
    live = [n for n in needs if n not in served]
    fallback, source = None, None
    if live and frozen is not None:
        fallback, source = FrozenModelReference(frozen.requires_grad_(False)), "ref_model"
    elif live and hasattr(trained, "disable_adapter"):
        fallback, source = DisabledAdapterReference(trained), "disabled adapters"
    elif live and copy_trained:
        fallback = FrozenModelReference(copy.deepcopy(trained).requires_grad_(False))
        source = "frozen copy of θ_ini"
    elif live:
        raise ValueError(f"objective {objective.name!r} needs {live} from a reference model, and none was given: "
                         f"pass frozen=<θ_ini>, a peft model (its adapters disabled are θ_ini), or copy_trained=True")
    provider = CachedReference(forget=tables.get("forget"), idk=tables.get("idk"), fallback=fallback)
    return Reference(provider, needs, sorted(tables), source)

"""`unlearnkit info`: what a model or a dataset holds, at a glance."""
from __future__ import annotations

from collections import Counter


def describe(model: str | None = None, data: str | None = None) -> str:
    lines: list[str] = []
    if data:
        from .data.specs import load_records

        recs = load_records(data)
        kinds = Counter(r.tags.get("kind", r.tags.get("split", "-")) for r in recs)
        with_pert = sum(1 for r in recs if r.perturbed_answers)
        with_para = sum(1 for r in recs if r.paraphrased_answer)
        lines += [f"data {data}", f"  records: {len(recs)}", f"  by kind: {dict(kinds)}",
                  f"  with paraphrased answer: {with_para}; with perturbed answers: {with_pert}",
                  f"  example: Q: {recs[0].question!r} A: {recs[0].answer!r}"]
    if model:
        from .models.loading import load_model

        m, tok = load_model(model)
        n = sum(p.numel() for p in m.parameters())
        cfg = m.config
        lines += [f"model {model}", f"  type: {cfg.model_type}; parameters: {n/1e6:.1f}M; dtype: {m.dtype}",
                  f"  layers: {getattr(cfg, 'num_hidden_layers', '?')}; hidden: {getattr(cfg, 'hidden_size', '?')}; "
                  f"vocab: {len(tok)}",
                  f"  eos: {tok.eos_token!r}; pad: {tok.pad_token!r}; chat template: {bool(tok.chat_template)}"]
    if not lines:
        raise ValueError("nothing to describe: pass model=… and/or data=…")
    return "\n".join(lines)

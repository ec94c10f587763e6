"""Data specs: one string names any dataset on the command line or in a YAML file.

    tofu:forget01                          a TOFU split (local folder or hub, see `load_tofu`)
    synthetic:train,people=50,seed=0       synthetic related-knowledge data (parts below)
    path/to/file.jsonl                     QA records in JSON lines
    muse:news/raw/forget[,limit=N]         a MUSE split (`load_muse`): text configs are documents;
                                           `+` joins splits: muse:news/raw/forget+raw/retain1
    docs:path/to/corpus.jsonl[,limit=N]    documents: `{"text"}` JSON lines, or any other file as one text
    wmdp:cyber-forget[,limit=N]            WMDP's corpora as documents (hub or a local copy; `data.wmdp`)

Documents are trained on as `max_length`-token windows of the EOS-joined corpus (see `documents`).

Synthetic parts: `train` (every person's target, related and unrelated facts plus the world facts),
`retain` (the same for retain people only: what the retain oracle sees), `forget` (targets of the
forget people), `forget_related`, `forget_multihop`, `targets_only` (all targets + unrelated, no related
facts: the P2 model of the UIPE experiments), or any `kinds=a+b` with `who=all|forget|retain`.
"""
from __future__ import annotations

from pathlib import Path

from .documents import documents_from_spec
from .muse import muse_from_spec
from .records import DataError, QARecord, read_qa_jsonl
from .synthetic import KINDS, generate_related_knowledge
from .tofu import load_tofu

SYNTHETIC_PARTS = {
    "train": ("all", ("target", "related", "unrelated", "world")),
    "retain": ("retain", ("target", "related", "unrelated", "world")),
    "forget": ("forget", ("target",)),
    "forget_related": ("forget", ("related",)),
    "forget_multihop": ("forget", ("multihop",)),
    "forget_unrelated": ("forget", ("unrelated",)),
    "retain_targets": ("retain", ("target",)),
    "targets_only": ("all", ("target", "unrelated", "world")),
    "all": ("all", KINDS),
}
SYNTHETIC_OPTIONS = {"people": int, "seed": int, "forget_fraction": float, "perturbed": int, "who": str, "kinds": str}


def parse_options(text: str) -> tuple[str | None, dict[str, str]]:
    part, opts = None, {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        if "=" in item:
            k, v = item.split("=", 1)
            opts[k.strip()] = v.strip()
        elif part is None:
            part = item
        else:
            raise DataError(f"data spec option {item!r} is not key=value")
    return part, opts


def synthetic_from_spec(text: str):
    """(RelatedKnowledgeSet, part, who, kinds, forget_fraction) from the part after `synthetic:`."""
    part, opts = parse_options(text)
    unknown = set(opts) - set(SYNTHETIC_OPTIONS)
    if unknown:
        raise DataError(f"unknown synthetic option(s) {sorted(unknown)}; known: {', '.join(SYNTHETIC_OPTIONS)}")
    try:
        typed = {k: SYNTHETIC_OPTIONS[k](v) for k, v in opts.items()}
    except ValueError as exc:
        raise DataError(f"synthetic data spec {text!r}: {exc}") from None
    part = part or "train"
    if part not in SYNTHETIC_PARTS:
        raise DataError(f"unknown synthetic part {part!r}; known: {', '.join(SYNTHETIC_PARTS)}")
    who, kinds = SYNTHETIC_PARTS[part]
    who = typed.get("who", who)
    if "kinds" in typed:
        kinds = tuple(typed["kinds"].split("+"))
    ds = generate_related_knowledge(typed.get("people", 50), typed.get("seed", 0), typed.get("perturbed", 4))
    return ds, who, kinds, typed.get("forget_fraction", 0.1)


def load_records(spec: str) -> list[QARecord]:
    """Records named by `spec` (see module docstring)."""
    if spec.startswith("tofu:"):
        split, opts = parse_options(spec[len("tofu:"):])
        return load_tofu(split, source=opts.get("source"))
    if spec.startswith("synthetic:") or spec == "synthetic":
        ds, who, kinds, frac = synthetic_from_spec(spec.partition(":")[2])
        forget, retain = ds.split(frac)
        people = {"all": None, "forget": forget, "retain": retain}.get(who)
        if who not in ("all", "forget", "retain"):
            raise DataError(f"who={who!r}: expected all, forget or retain")
        return ds.records(kinds=kinds, people=people)
    if spec.startswith("wmdp:"):
        from .wmdp import wmdp_from_spec

        return wmdp_from_spec(*parse_options(spec[len("wmdp:"):]))
    if spec.startswith(("muse:", "docs:")):
        kind, _, rest = spec.partition(":")
        where, opts = parse_options(rest)
        return (muse_from_spec if kind == "muse" else documents_from_spec)(where or "", opts)
    path = Path(spec)
    if path.suffix in (".json", ".jsonl") or path.exists():
        return read_qa_jsonl(path)
    raise DataError(f"cannot understand data spec {spec!r}: expected tofu:<split>, synthetic:<part>,..., muse:<corpus>/<config>/<split>, docs:<path> or a .jsonl path")

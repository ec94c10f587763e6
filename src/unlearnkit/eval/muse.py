"""The MUSE suite (`suite=muse`): generate once per set, score once per set, aggregate with the pure metrics.

Sets of one corpus (`data.muse`; News by default), as open-unlearning's `eval/muse` reads them:
  verbmem/forget           prompt → greedy 128 new tokens: `verbmem_forget/rouge_l_f1` (VerbMem);
                           teacher-forced on prompt + " " + gt: extraction strength, exact memorisation
  knowmem/forget_qa        10-shot prompt from forget_qa_icl → greedy 32 tokens cut at a stop string:
                           `knowmem_forget/rouge_l_f1` (KnowMem on the forget set)
  knowmem/retain_qa        the same with retain_qa_icl: `knowmem_retain/rouge_l_f1` (utility)
  privleak/forget, holdout each text (first 2048 tokens) scored: loss / zlib / min-k% / min-k%++ AUC,
                           `privleak` = relative min-k% AUC gap to the retain oracle's (`MuseOracleStats`)

Two variants, chosen by `PromptFormat.masking` as for TOFU:
* `exact` (default): the true continuation / answer strings are the references, and token metrics use every
  label token.
* `open-unlearning`: its numbers to the last digit, for side-by-side comparison. References are decoded from
  tokens: VerbMem's from the label tokens of the joint tokenisation `tok(prompt + " " + gt)[len(tok(prompt)):]`
  (first 2048), KnowMem's as `decode(tok(prompt + answer)[:512])` with `decode(tok(prompt)[:512])` cut out;
  both with transformers 4.45's `clean_up_tokenization` (" ." → ".", ...) applied to references and
  generations. The last label token is dropped from min-k%, extraction strength and exact memorisation
  (`tokenwise_logprobs` drops it as an EOS, though these texts have none); KnowMem prompts are truncated to
  512 tokens; generation batches keep the data order (8 for VerbMem, 16 for KnowMem).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

from ..data.collate import IGNORE, PromptFormat
from ..data.muse import load_muse
from ..data.records import QARecord
from . import memorization, mia, muse_metrics
from .generation import generate_from_ids
from .result import MetricResult
from .scoring import TokenScores, score_features

log = logging.getLogger(__name__)
ORACLE_STATS_FILE = "muse_oracle_stats.json"
SETS = {"verbmem": ("verbmem", "forget"), "knowmem_forget": ("knowmem", "forget_qa"),
        "knowmem_retain": ("knowmem", "retain_qa"), "icl_forget": ("knowmem", "forget_qa_icl"),
        "icl_retain": ("knowmem", "retain_qa_icl"), "privleak_forget": ("privleak", "forget"),
        "privleak_holdout": ("privleak", "holdout")}
MAX_TEXT_TOKENS = 2048      # open-unlearning's CompletionDataset max_length for verbmem and privleak texts
KNOWMEM_MAX_TOKENS = 512    # its QADataset max_length (truncates the few-shot prompt in that variant)
OU_BATCH = {"verbmem": 8, "knowmem": 16}


@dataclass
class MuseOracleStats:
    """The retain oracle's min-k% AUC on forget vs holdout texts, the PrivLeak reference (saved once, reused)."""

    corpus: str
    mia_k: float
    mia_min_k_auc: float
    variant: str
    meta: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        from ..runs import write_json

        write_json(Path(path), asdict(self))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "MuseOracleStats":
        from ..runs import find_eval_file

        path = find_eval_file(path, ORACLE_STATS_FILE)
        if not path.is_file():
            raise FileNotFoundError(
                f"oracle={str(path)!r}: no such file. Produce it once from the retain model's run: `unlearnkit "
                f"evaluate run=<oracle dir> suite=muse save_oracle_stats=true` writes <oracle dir>/eval/{ORACLE_STATS_FILE}")
        data = json.loads(path.read_text())
        return cls(**{k: data[k] for k in ("corpus", "mia_k", "mia_min_k_auc", "variant")}, meta=data.get("meta", {}))


@dataclass
class MuseResult:
    metrics: dict[str, MetricResult]
    generations: dict[str, list[str]]
    references: dict[str, list[str]]
    settings: dict

    def to_json(self) -> dict[str, dict]:
        """Metric name → {"value", "definition", "n", ..., "per_item": one value per sample, by index}."""
        return {k: m.to_json(with_items=True) for k, m in self.metrics.items()}

    def oracle_stats(self, meta: dict | None = None) -> MuseOracleStats:
        return MuseOracleStats(self.settings["corpus"], self.settings["mia_k"], self.metrics["mia/min_k"].value,
                               self.settings["variant"], meta or {})


def load_muse_sets(corpus: str = "news", source=None, limit: int | None = None) -> dict[str, list[QARecord]]:
    """Every set the suite reads (keys of `SETS`); `limit` caps each evaluated set, never the 10 ICL pairs."""
    out = {name: load_muse(corpus, config, split, source) for name, (config, split) in SETS.items()}
    if limit is not None:
        out = {k: v if k.startswith("icl_") else v[:limit] for k, v in out.items()}
    return out


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=True)["input_ids"]


def _completion_feature(tokenizer, prefix: str, text: str, ou: bool) -> dict:
    """Teacher-forced ids/labels of `prefix` + `text`, labels on at most `MAX_TEXT_TOKENS` text tokens.

    With a prefix (VerbMem) the text follows a space; with none (PrivLeak) the first token is context only.
    `exact` tokenises the two parts apart (the text's tokens are exactly its own); `open-unlearning` jointly."""
    n_prefix = len(_ids(tokenizer, prefix)) if prefix or ou else 0
    if ou:
        ids = _ids(tokenizer, prefix + (" " if prefix else "") + text)[: n_prefix + MAX_TEXT_TOKENS]
    else:
        body = tokenizer((" " if prefix else "") + text, add_special_tokens=not prefix)["input_ids"]
        ids = (_ids(tokenizer, prefix) if prefix else []) + body[:MAX_TEXT_TOKENS]
    n_masked = max(n_prefix, 1)
    return {"input_ids": ids, "labels": [IGNORE] * n_masked + ids[n_masked:]}


def _drop_last(s: TokenScores) -> TokenScores:
    """open-unlearning's `tokenwise_logprobs` drops the last label token (meant as EOS; here a text token)."""
    cut = slice(0, max(s.n_tokens - 1, 0))
    return TokenScores(s.logprobs[cut], s.hits[cut], None if s.mu is None else s.mu[cut],
                       None if s.sigma is None else s.sigma[cut])


def _decoded(tokenizer, text: str, ou: bool) -> str:
    """open-unlearning decodes with `clean_up_tokenization_spaces=True`, which transformers 4.45 applies to BPE
    tokenizers too (" ." → ".", " n't" → "n't", ...) and transformers 5 skips for them: applied here by hand."""
    return tokenizer.clean_up_tokenization(text) if ou else text


def _label_text(tokenizer, feature: dict) -> str:
    ids = [t for t in feature["labels"] if t != IGNORE]
    return _decoded(tokenizer, tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False),
                    True).strip()


def _knowmem(model, tokenizer, recs, icl, fmt, batch_size, new_tokens, name) -> tuple[MetricResult, list, list]:
    ou = fmt.masking == "open-unlearning" and fmt.template != "chat"
    pairs = [(r.question, r.answer) for r in icl]
    if fmt.template == "chat":
        prompts = [tokenizer.apply_chat_template(muse_metrics.knowmem_chat(pairs, r.question), tokenize=True,
                                                 add_generation_prompt=True) for r in recs]
    else:
        texts = [muse_metrics.knowmem_prompt(pairs, r.question) for r in recs]
        prompts = [_ids(tokenizer, t)[:KNOWMEM_MAX_TOKENS] if ou else _ids(tokenizer, t) for t in texts]
    raw = generate_from_ids(model, tokenizer, prompts, new_tokens, OU_BATCH["knowmem"] if ou else batch_size,
                            sort_by_length=not ou, stops=muse_metrics.KNOWMEM_STOPS, clean_up_tokenization_spaces=False)
    gens = [muse_metrics.cut_at_stops(_decoded(tokenizer, t, ou)) for t in raw]
    refs = [r.answer for r in recs]
    if ou:  # the decoded prompt + answer with the decoded prompt cut out (see the module docstring)
        fulls = [_ids(tokenizer, t + r.answer)[:KNOWMEM_MAX_TOKENS] for t, r in zip(texts, recs)]
        refs = [_label_text(tokenizer, {"labels": f}).replace(_label_text(tokenizer, {"labels": p}), "").strip()
                for p, f in zip(prompts, fulls)]
    return muse_metrics.rouge_l_f1(gens, refs, name), gens, refs


def _verbmem(model, tokenizer, recs, fmt, batch_size, new_tokens, extraction_variant):
    ou = fmt.masking == "open-unlearning"
    prompts = [_ids(tokenizer, r.question) for r in recs]
    raw = generate_from_ids(model, tokenizer, prompts, new_tokens, OU_BATCH["verbmem"] if ou else batch_size,
                            sort_by_length=not ou, clean_up_tokenization_spaces=False)
    gens = [_decoded(tokenizer, t, ou).strip() for t in raw]
    feats = [_completion_feature(tokenizer, r.question, r.answer, ou) for r in recs]
    refs = [_label_text(tokenizer, f) for f in feats] if ou else [r.answer for r in recs]
    scores = score_features(model, feats, tokenizer.pad_token_id, batch_size)
    hits = [(_drop_last(s) if ou else s).hits for s in scores]
    out = {"verbmem_forget/rouge_l_f1": muse_metrics.rouge_l_f1(gens, refs, "verbmem_forget"),
           "forget/extraction_strength": memorization.extraction_strength(hits, extraction_variant),
           "forget/exact_memorization": memorization.exact_memorization(hits)}
    return out, gens, refs


def _mia(model, tokenizer, forget, holdout, ou, batch_size, k, oracle: MuseOracleStats | None):
    """MIA AUCs (members = the forget texts) and PrivLeak from the min-k% AUC."""
    def scored(recs):
        feats = [_completion_feature(tokenizer, "", r.answer, ou) for r in recs]
        out = score_features(model, feats, tokenizer.pad_token_id, batch_size, token_stats=True)
        return [_drop_last(s) if ou else s for s in out]

    f, h = scored(forget), scored(holdout)
    attacks = {
        "loss": lambda s, t: mia.loss_scores([x.mean_lp for x in s]),
        "zlib": lambda s, t: mia.zlib_scores([x.mean_lp for x in s], t),
        "min_k": lambda s, t: mia.min_k_scores([x.logprobs for x in s], k),
        "min_k_plus_plus": lambda s, t: mia.min_k_plus_plus_scores([x.logprobs for x in s], [x.mu for x in s],
                                                                   [x.sigma for x in s], k),
    }
    texts_f, texts_h = [r.answer for r in forget], [r.answer for r in holdout]
    out = {f"mia/{n}": mia.roc_auc(fn(f, texts_f), fn(h, texts_h), name=n) for n, fn in attacks.items()}
    ref = 0.5 if oracle is None else oracle.mia_min_k_auc
    pl = mia.privleak(out["mia/min_k"].value, ref)
    pl.definition += " [reference AUC 0.5, no oracle]" if oracle is None else " [reference: oracle min_k AUC]"
    pl.n = out["mia/min_k"].n
    out["privleak"] = pl
    return out


def run_muse(model, tokenizer, sets: Mapping[str, list[QARecord]], oracle_stats: MuseOracleStats | str | Path | None = None,
             fmt: PromptFormat | None = None, *, corpus: str = "news", batch_size: int = 8,
             verbmem_new_tokens: int = muse_metrics.VERBMEM_NEW_TOKENS,
             knowmem_new_tokens: int = muse_metrics.KNOWMEM_NEW_TOKENS, mia_k: float = 0.4) -> MuseResult:
    """Evaluate `model` on the MUSE suite (module docstring) over `sets` (keys of `SETS`, e.g. from
    `load_muse_sets`); without `oracle_stats`, PrivLeak uses the reference AUC 0.5 and says so."""
    if isinstance(oracle_stats, (str, Path)):
        oracle_stats = MuseOracleStats.load(oracle_stats)
    fmt = fmt or PromptFormat(template="plain")
    variant = fmt.masking
    if oracle_stats is not None and (oracle_stats.mia_k != mia_k or oracle_stats.variant != variant):
        raise ValueError(f"oracle stats use mia_k={oracle_stats.mia_k}, variant={oracle_stats.variant!r} but this "
                         f"evaluation mia_k={mia_k}, variant={variant!r}; PrivLeak needs the same on both sides")
    missing = sorted(set(SETS) - set(sets))
    if missing:
        raise ValueError(f"sets: missing MUSE set(s) {missing} (need {sorted(SETS)})")
    es_variant = "open-unlearning" if variant == "open-unlearning" else "paper"
    metrics, gens, refs = {}, {}, {}
    t0 = time.perf_counter()
    vm, gens["verbmem"], refs["verbmem"] = _verbmem(model, tokenizer, sets["verbmem"], fmt, batch_size,
                                                    verbmem_new_tokens, es_variant)
    metrics.update(vm)
    log.info("MUSE verbmem: %d prompts, %.0f s", len(sets["verbmem"]), time.perf_counter() - t0)
    for part in ("forget", "retain"):
        name, t0 = f"knowmem_{part}", time.perf_counter()
        metrics[f"{name}/rouge_l_f1"], gens[name], refs[name] = _knowmem(
            model, tokenizer, sets[name], sets[f"icl_{part}"], fmt, batch_size, knowmem_new_tokens, name)
        log.info("MUSE %s: %d questions, %.0f s", name, len(sets[name]), time.perf_counter() - t0)
    t0 = time.perf_counter()
    metrics.update(_mia(model, tokenizer, sets["privleak_forget"], sets["privleak_holdout"],
                        variant == "open-unlearning", batch_size, mia_k, oracle_stats))
    log.info("MUSE privleak: %d + %d texts, %.0f s", len(sets["privleak_forget"]), len(sets["privleak_holdout"]),
             time.perf_counter() - t0)
    settings = dict(corpus=corpus, variant=variant, template=fmt.template, batch_size=batch_size,
                    verbmem_new_tokens=verbmem_new_tokens, knowmem_new_tokens=knowmem_new_tokens, mia_k=mia_k,
                    extraction_variant=es_variant, max_text_tokens=MAX_TEXT_TOKENS,
                    sizes={k: len(v) for k, v in sets.items()})
    return MuseResult(metrics, gens, refs, settings)


def run_muse_suite(run, model, tokenizer, model_name, oracle_stats, save_oracle_stats: bool, fmt: PromptFormat,
                   suite_kwargs: dict) -> tuple[dict, dict]:
    """`evaluate_run`'s MUSE branch: (metrics json, settings); the oracle run also writes its PrivLeak stats."""
    if fmt.template == "auto":  # MUSE evaluates base models on plain text: no chat template unless asked
        fmt = PromptFormat(template="plain", masking=fmt.masking, max_length=fmt.max_length)
    corpus = suite_kwargs.get("corpus", "news")
    sets = suite_kwargs.get("records") or load_muse_sets(corpus, suite_kwargs.get("source"), suite_kwargs.get("limit"))
    kwargs = {k: v for k, v in suite_kwargs.items()
              if k in ("batch_size", "mia_k", "verbmem_new_tokens", "knowmem_new_tokens")}
    result = run_muse(model, tokenizer, sets, None if save_oracle_stats else oracle_stats, fmt, corpus=corpus, **kwargs)
    result.settings["limit"] = suite_kwargs.get("limit")
    if save_oracle_stats:
        result.oracle_stats({"run": str(run.path), "model": model_name}).save(run.eval_dir / ORACLE_STATS_FILE)
    return result.to_json(), result.settings

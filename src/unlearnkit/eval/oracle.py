"""The retain oracle's statistics that other runs are compared with: forget truth ratios, min-k AUC, settings.

Forget quality (a KS test) and PrivLeak compare an evaluated model with the retain oracle's numbers, which are
computed once and saved (`<oracle run>/eval/oracle_stats.json`). Those numbers only mean something against an
evaluation made the same way, so they carry the settings that change them (masking, resolved template,
max_length, precision), and `check_compatible` refuses a mismatch by name.

`OracleStats.load` also reads open-unlearning's `TOFU_EVAL.json` of a retain model (its `forget_truth_ratio`
per-index scores and its `mia_min_k` AUC), made by its `eval.sh` (plain template, its masking, max_length 512;
the dtype comes from `ref_eval_meta.json` beside it when present).
"""
from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

ORACLE_STATS_FILE = "oracle_stats.json"
#: the settings that change the oracle's numbers, compared before every use
COMPARED_SETTINGS = ("masking", "template", "max_length", "precision")
#: what open-unlearning's TOFU eval (`eval.sh`, configs/data/datasets/TOFU_QA_*.yaml) uses
OPEN_UNLEARNING_SETTINGS = {"masking": "open-unlearning", "template": "plain", "max_length": 512}
_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


class OracleStatsMissing(ValueError):
    """Forget quality was asked for without the retain oracle's truth ratios."""


def missing_message(forget: str) -> str:
    return (f"forget quality needs the retain oracle's per-question truth ratios on {forget}, and none were given. "
            f"Produce them once from the oracle run: `unlearnkit evaluate run=<oracle dir> suite=tofu forget={forget} "
            f"save_oracle_stats=true` (or `evaluate_run(<oracle dir>, forget={forget!r}, save_oracle_stats=True)`), "
            f"which writes <oracle dir>/eval/{ORACLE_STATS_FILE}; then pass oracle_stats=<that file> (open-unlearning's "
            "TOFU_EVAL.json of a retain model works too). To evaluate without it, pass forget_quality=False.")


@dataclass
class OracleStats:
    """The retain oracle's per-question forget truth ratios (row `index` in the forget split), its min-k AUC,
    and the `settings` they were made with (keys `COMPARED_SETTINGS`; empty for files saved before they were
    recorded)."""

    forget: str
    truth_ratio_mean: str
    truth_ratios: list[float]
    mia_min_k_auc: float | None = None
    mia_k: float | None = None
    meta: dict = field(default_factory=dict)
    index: list[int] | None = None
    settings: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.index is not None and len(self.index) != len(self.truth_ratios):
            raise ValueError(f"OracleStats: {len(self.index)} indices for {len(self.truth_ratios)} truth ratios")

    def head(self, n: int | None) -> "OracleStats":
        """The first `n` questions (a quick evaluation on `limit` rows compares with the same rows)."""
        if n is None:
            return self
        return OracleStats(**{**asdict(self), "truth_ratios": self.truth_ratios[:n],
                              "index": None if self.index is None else self.index[:n]})

    def save(self, path: str | Path) -> Path:
        from ..runs import write_json

        path = Path(path)
        write_json(path, asdict(self))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "OracleStats":
        """An `oracle_stats.json`, a run dir holding `eval/oracle_stats.json`, or open-unlearning's TOFU_EVAL.json."""
        from ..runs import find_eval_file

        path = find_eval_file(path, ORACLE_STATS_FILE, "TOFU_EVAL.json")
        if not path.is_file():
            raise OracleStatsMissing(f"oracle_stats={str(path)!r}: no such file. " + missing_message("<forget split>"))
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"oracle_stats={str(path)!r}: not valid JSON ({e})") from e
        if isinstance(data, dict) and "forget_truth_ratio" in data:
            return from_open_unlearning(data, path)
        missing = [k for k in ("forget", "truth_ratio_mean", "truth_ratios") if k not in data]
        if missing:
            raise ValueError(f"oracle_stats={str(path)!r}: missing key(s) {missing}; expected an {ORACLE_STATS_FILE} "
                             "written by `save_oracle_stats=true`, or open-unlearning's TOFU_EVAL.json")
        return cls(**{k: data[k] for k in ("forget", "truth_ratio_mean", "truth_ratios")},
                   mia_min_k_auc=data.get("mia_min_k_auc"), mia_k=data.get("mia_k"), meta=data.get("meta", {}),
                   index=data.get("index"), settings=data.get("settings", {}))

    def check_compatible(self, settings: dict) -> None:
        """Refuse (ValueError naming the setting) when this evaluation's `settings` differ from the oracle's in
        any of `COMPARED_SETTINGS`; warn when the oracle did not record one."""
        unrecorded = [k for k in COMPARED_SETTINGS if self.settings.get(k) is None]
        if unrecorded:
            warnings.warn(f"oracle stats {self.meta.get('source', '')!r} do not record {unrecorded}; they cannot be "
                          "checked against this evaluation's settings (re-save them to record them)",
                          UserWarning, stacklevel=3)
        for key in COMPARED_SETTINGS:
            mine, theirs = settings.get(key), self.settings.get(key)
            if theirs is not None and mine is not None and mine != theirs:
                raise ValueError(f"oracle stats were made with {key}={theirs!r} but this evaluation uses "
                                 f"{key}={mine!r}; the forget-quality KS test and PrivLeak compare like with like "
                                 f"only. Evaluate with {key}={theirs!r}, or re-save the oracle stats with {key}={mine!r}.")


def from_open_unlearning(data: dict, path: Path) -> OracleStats:
    """`OracleStats` from open-unlearning's TOFU_EVAL.json of a retain model: `forget_truth_ratio.value_by_index`
    (raw ratios wrong/right, geometric mean over perturbed answers) and `mia_min_k.agg_value` (same AUC
    orientation as unlearnkit: 1 = forget set recognisable)."""
    from ..data.tofu import forget_size

    try:
        by_index = data["forget_truth_ratio"]["value_by_index"]
        rows = sorted((int(i), float(v["score"])) for i, v in by_index.items())
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"oracle_stats={str(path)!r}: forget_truth_ratio.value_by_index is not "
                         f"{{index: {{'score': R}}}} ({e!r}); is this open-unlearning's TOFU_EVAL.json?") from e
    meta_file = path.parent / "ref_eval_meta.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    forget = meta.get("forget_split") or next((f for f in ("forget01", "forget05", "forget10")
                                               if forget_size(f) == len(rows)), None)
    if forget is None:
        raise ValueError(f"oracle_stats={str(path)!r}: {len(rows)} forget rows match no TOFU forget split and no "
                         "ref_eval_meta.json names it")
    auc = data.get("mia_min_k", {}).get("agg_value") if isinstance(data.get("mia_min_k"), dict) else None
    settings = {**OPEN_UNLEARNING_SETTINGS, "precision": _DTYPES.get(meta.get("dtype"))}
    return OracleStats(forget=forget, truth_ratio_mean="geometric", truth_ratios=[r for _, r in rows],
                       mia_min_k_auc=None if auc is None else float(auc), mia_k=None,
                       meta={"source": str(path), "format": "open-unlearning TOFU_EVAL.json"},
                       index=[i for i, _ in rows], settings=settings)

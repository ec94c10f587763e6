"""wmdp:<corpus> specs: a local copy first, WMDP's length filter and cut, clear offline / gated errors."""
from __future__ import annotations

import json

import pytest

from unlearnkit.data import wmdp
from unlearnkit.data.records import DataError
from unlearnkit.data.specs import load_records


@pytest.fixture()
def offline(monkeypatch):
    def no_hub(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(wmdp, "_hub_rows", no_hub)
    monkeypatch.delenv(wmdp.ENV_VAR, raising=False)


def test_local_copy_filtered_and_cut_like_wmdp(tmp_path, offline):
    texts = ["short", "x" * 60, "y" * 3000, "z" * 51]
    (tmp_path / "cyber-forget.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    recs = load_records(f"wmdp:cyber-forget,source={tmp_path}")
    assert [len(r.answer) for r in recs] == [60, 2000, 51]       # > 50 chars kept, cut at 2000
    assert all(r.tags["document"] and r.question == "" for r in recs)
    assert len(load_records(f"wmdp:cyber-forget,source={tmp_path},limit=1,max_chars=0")) == 1
    assert [len(r.answer) for r in load_records(f"wmdp:cyber-forget,source={tmp_path},max_chars=0")][1] == 3000


def test_offline_errors_name_the_hub_id_gating_and_the_local_way(offline, tmp_path):
    with pytest.raises(DataError, match=r"cais/wmdp-bio-forget-corpus.*gated.*source=<folder>"):
        load_records("wmdp:bio-forget")
    with pytest.raises(DataError, match="cais/wmdp-corpora") as exc:
        load_records("wmdp:cyber-forget")
    assert "gated" not in str(exc.value)
    with pytest.raises(DataError, match="unknown WMDP corpus 'bio'; known: bio-forget"):
        load_records("wmdp:bio")
    with pytest.raises(DataError, match="unknown option"):
        load_records("wmdp:wikitext,lmit=3")


def test_plus_joins_corpora_with_a_limit_each(tmp_path, offline):
    for name, n in (("bio-forget", 3), ("cyber-forget", 2)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"text": f"{name} " + "w" * 80}) + "\n"
                                                        for _ in range(n)))
    recs = load_records(f"wmdp:bio-forget+cyber-forget,source={tmp_path},limit=2")
    assert [r.answer.split()[0] for r in recs] == ["bio-forget"] * 2 + ["cyber-forget"] * 2

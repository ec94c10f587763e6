"""Document corpora (token windows) and the MUSE loader: windowing, specs, local/hub resolution, objectives."""
from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import pytest
import torch

from unlearnkit.data import QADataset, QARecord, pad_batch
from unlearnkit.data import muse as muse_data
from unlearnkit.data.collate import PromptFormat
from unlearnkit.data.documents import cut_windows, document_records, is_document_set, token_stream
from unlearnkit.data.records import DataError
from unlearnkit.data.specs import load_records

SHARED_MUSE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "muse"
DOCS = ["Alice Smith was born in Paris.", "Bob Jones works as a baker.", "The river floods every spring."]


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# -- windowing -------------------------------------------------------------------------------------------
def test_cut_windows_by_hand():
    assert cut_windows([1, 2, 3, 4, 5, 6, 7, 8], 3) == [[1, 2, 3], [4, 5, 6], [7, 8]]
    assert cut_windows([1, 2, 3, 4, 5, 6], 3) == [[1, 2, 3], [4, 5, 6]]
    # a lone last token has no next-token target: dropped (it would be context only)
    assert cut_windows([1, 2, 3, 4, 5, 6, 7], 3) == [[1, 2, 3], [4, 5, 6]]
    with pytest.raises(ValueError, match="at least 2"):
        cut_windows([1, 2, 3], 1)


def test_token_stream_puts_eos_after_each_document(tiny_tokenizer):
    tok = tiny_tokenizer
    ids = token_stream(tok, ["Alice", "Bob"])
    a = tok("Alice", add_special_tokens=False)["input_ids"]
    b = tok("Bob", add_special_tokens=False)["input_ids"]
    assert ids == a + [tok.eos_token_id] + b + [tok.eos_token_id]


@pytest.mark.parametrize("length", [2, 3, 5, 8, 13, 64])
def test_windows_lose_and_duplicate_no_token(tiny_tokenizer, length):
    tok = tiny_tokenizer
    recs = document_records(DOCS, "fixture")
    ds = QADataset(recs, tok, PromptFormat(template="plain", max_length=length))
    stream = token_stream(tok, DOCS)
    joined = [t for item in ds.items for t in item.input_ids]
    # the windows, in order, are exactly the stream (the last token only missing when it would be a 1-token window)
    assert joined == stream[:len(joined)] and len(stream) - len(joined) in ((0, 1) if len(stream) % length == 1 else (0,))
    assert all(len(e.input_ids) <= length for e in ds.items)
    assert all(len(e.input_ids) == length for e in ds.items[:-1])
    # every token is a label; nothing is masked as a prompt
    assert all(e.labels == e.input_ids and e.prompt_len == 0 for e in ds.items)
    assert len(ds) == math.ceil(len(joined) / length)


def test_mixed_documents_and_questions_are_refused():
    recs = document_records(DOCS, "x") + [QARecord(question="Q?", answer="A")]
    with pytest.raises(DataError, match="documents and the rest question/answer"):
        is_document_set(recs)
    assert not is_document_set([QARecord(question="Q?", answer="A")])


# -- specs -----------------------------------------------------------------------------------------------
def test_docs_spec_reads_jsonl_and_text(tmp_path):
    f = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in DOCS])
    recs = load_records(f"docs:{f}")
    assert [r.answer for r in recs] == DOCS and all(r.question == "" and r.tags["document"] for r in recs)
    assert [r.answer for r in load_records(f"docs:{f},limit=2")] == DOCS[:2]
    txt = tmp_path / "book.txt"
    txt.write_text("One long text.\n\nSecond paragraph.", encoding="utf-8")
    assert [r.answer for r in load_records(f"docs:{txt}")] == ["One long text.\n\nSecond paragraph."]


def test_docs_spec_errors_name_file_line_and_fix(tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "ok"}, {"body": "no text"}])
    with pytest.raises(DataError, match=r"bad.jsonl:2: expected an object with a string field 'text'"):
        load_records(f"docs:{bad}")
    with pytest.raises(DataError, match="no such file"):
        load_records(f"docs:{tmp_path / 'missing.jsonl'}")
    with pytest.raises(DataError, match="limit='x' must be a whole number"):
        load_records(f"docs:{bad},limit=x")
    with pytest.raises(DataError, match="unknown option"):
        load_records(f"docs:{bad},window=3")


@pytest.fixture()
def muse_folder(tmp_path):
    """A small local folder in the MUSE layout (same schema as the hub configs)."""
    root = tmp_path / "muse"
    write_jsonl(root / "news" / "raw" / "forget.jsonl", [{"text": t} for t in DOCS])
    write_jsonl(root / "news" / "knowmem" / "forget_qa.jsonl", [{"question": "Who?", "answer": "Alice"}])
    write_jsonl(root / "news" / "verbmem" / "forget.jsonl", [{"prompt": "Alice Smith was", "gt": "born in Paris."}])
    return root


def test_muse_spec_reads_a_local_folder(muse_folder, monkeypatch):
    monkeypatch.setenv("UNLEARNKIT_MUSE_DIR", str(muse_folder))
    docs = load_records("muse:news/raw/forget")
    assert [r.answer for r in docs] == DOCS and is_document_set(docs)
    assert docs[0].tags["source"] == "muse:news/raw/forget"
    qa = load_records("muse:news/knowmem/forget_qa")
    assert (qa[0].question, qa[0].answer) == ("Who?", "Alice") and not is_document_set(qa)
    vm = muse_data.load_muse("news", "verbmem", "forget")
    assert (vm[0].question, vm[0].answer) == ("Alice Smith was", "born in Paris.")
    # several splits joined with "+", `limit` per part
    both = load_records("muse:news/raw/forget+raw/forget,limit=2")
    assert [r.answer for r in both] == DOCS[:2] * 2
    with pytest.raises(DataError, match="muse:news/raw/forget\\+knowmem/forget_qa: .* documents and the rest question/answer"):
        load_records("muse:news/raw/forget+knowmem/forget_qa")
    # source= beats the environment
    monkeypatch.setenv("UNLEARNKIT_MUSE_DIR", "/nonexistent")
    assert len(load_records(f"muse:news/raw/forget,source={muse_folder},limit=2")) == 2


def test_muse_missing_locally_and_offline_names_both(muse_folder, monkeypatch):
    monkeypatch.setenv("UNLEARNKIT_MUSE_DIR", str(muse_folder))

    def offline(hub_id, config, split):
        raise ConnectionError("no network")

    monkeypatch.setattr(muse_data, "_hub_rows", offline)
    with pytest.raises(DataError) as err:
        load_records("muse:news/raw/retain1")
    msg = str(err.value)
    assert str(muse_folder / "news" / "raw" / "retain1.jsonl") in msg and "muse-bench/MUSE-News" in msg
    assert "source=" in msg
    with pytest.raises(DataError, match="unknown MUSE corpus 'bookz'"):
        load_records("muse:bookz/raw/forget")
    with pytest.raises(DataError, match="expected muse:<corpus>/<config>/<split>"):
        load_records("muse:news/raw")
    with pytest.raises(DataError, match="no such folder"):
        load_records("muse:news/raw/forget,source=/nonexistent/muse")


def test_muse_hub_id_is_asked_when_there_is_no_local_copy(monkeypatch, tmp_path):
    monkeypatch.setenv("UNLEARNKIT_MUSE_DIR", str(tmp_path))  # empty folder
    seen = []

    def hub(hub_id, config, split):
        seen.append((hub_id, config, split))
        return [{"text": "From the hub."}]

    monkeypatch.setattr(muse_data, "_hub_rows", hub)
    assert [r.answer for r in load_records("muse:books/raw/forget")] == ["From the hub."]
    assert seen == [("muse-bench/MUSE-Books", "raw", "forget")]


def test_muse_news_offline_copy():
    if not (SHARED_MUSE / "news").is_dir():
        pytest.skip("../shared/data/muse not present")
    first = json.loads((SHARED_MUSE / "news" / "raw" / "forget.jsonl").read_text().splitlines()[0])["text"]
    recs = muse_data.load_muse("news", "raw", "forget", source=SHARED_MUSE, limit=3)
    assert len(recs) == 3 and recs[0].answer == first
    assert len(muse_data.load_muse("news", "knowmem", "retain_qa_icl", source=SHARED_MUSE)) == 10


# -- every objective takes windowed batches ----------------------------------------------------------
def test_every_objective_takes_document_windows(tiny_tokenizer):
    from unlearnkit.models import tiny_llama
    from unlearnkit.objectives import OBJECTIVES, FrozenModelReference, UnlearnBatch, build_objective

    tok = tiny_tokenizer
    fmt = PromptFormat(template="plain", max_length=8)
    forget = QADataset(document_records(DOCS[:2], "f"), tok, fmt)
    retain = QADataset(document_records(DOCS[2:], "r"), tok, fmt)
    batch = UnlearnBatch(forget=pad_batch([forget[i] for i in range(len(forget))], tok.pad_token_id),
                         retain=pad_batch([retain[i] for i in range(len(retain))], tok.pad_token_id))
    model = tiny_llama(len(tok), hidden=32, layers=2, heads=2, intermediate=64, seed=0, attn_implementation="eager",
                       pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    ref = FrozenModelReference(copy.deepcopy(model))
    tried = []
    for name in OBJECTIVES.names():
        obj = build_objective(name, {"layer": 1} if name == "rmu" else {})
        if obj.needs_idk:  # pairs a question with a refusal: no meaning for a text window
            continue
        model.zero_grad()
        loss, logs = obj.loss(model, batch, ref)
        loss.backward()
        assert math.isfinite(loss.item()), name
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()), name
        tried.append(name)
    assert {"ga", "grad_diff", "npo"} <= set(tried)


def test_unlearn_runs_on_a_document_spec(tiny_tokenizer, tmp_path):
    from unlearnkit.models import tiny_llama
    from unlearnkit.train.unlearn import UnlearnConfig, unlearn

    tok = tiny_tokenizer
    model_dir = tmp_path / "model"
    tiny_llama(len(tok), hidden=32, layers=2, heads=2, intermediate=64, seed=0, pad_token_id=tok.pad_token_id,
               eos_token_id=tok.eos_token_id).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    f = write_jsonl(tmp_path / "forget.jsonl", [{"text": t} for t in DOCS[:2]])
    r = write_jsonl(tmp_path / "retain.jsonl", [{"text": t} for t in DOCS[2:]])
    summary = unlearn(UnlearnConfig(model=str(model_dir), method="npo", forget=f"docs:{f}", retain=f"docs:{r}",
                                    run=str(tmp_path / "run"), max_steps=2, save_steps=2, forget_batch_size=2,
                                    grad_accum=1, lr=1e-3, precision="fp32", warmup=0.0, max_length=8,
                                    template="plain"))
    assert summary and (tmp_path / "run" / "log.jsonl").is_file()


def test_muse_presets_plan_and_their_data_load():
    from unlearnkit.sweep import load_sweep, plan

    repo = Path(__file__).resolve().parents[2]
    fine = plan(load_sweep(repo / "configs/experiments/muse_finetune.yaml"))
    unl = plan(load_sweep(repo / "configs/experiments/muse_unlearn.yaml"))
    assert [r.settings["data"].split(",")[0] for r in fine] == ["muse:news/raw/forget+privleak/retain",
                                                                 "muse:news/privleak/retain"]
    assert {r.config["method"] for r in unl} == {"ga", "grad_diff", "npo", "simnpo", "rmu"}
    if not (SHARED_MUSE / "news").is_dir():
        pytest.skip("../shared/data/muse not present")
    forget = load_records(unl[0].config["forget"])
    assert len(forget) == 100 and is_document_set(forget)


def test_idk_objectives_refuse_documents():
    from unlearnkit.train.unlearn_data import idk_records

    with pytest.raises(DataError, match="no question"):
        idk_records(document_records(DOCS, "f"), ["I don't know."], seed=0)


def test_muse_part_option_cuts_equal_disjoint_or_nested_document_sets(muse_folder, monkeypatch):
    """`part=k/N`: the k-th of N contiguous document sets (the offline `sust` stand-in: disjoint, together every
    document once); `part=a-b/N`: parts a..b (the `scal` stand-in: nested as b grows)."""
    monkeypatch.setenv("UNLEARNKIT_MUSE_DIR", str(muse_folder))
    texts = [r.answer for r in load_records("muse:news/raw/forget")]
    n = len(texts)
    parts = [[r.answer for r in load_records(f"muse:news/raw/forget,part={k}/2")] for k in (1, 2)]
    assert parts[0] + parts[1] == texts and parts[0] and parts[1]               # disjoint, none lost, in order
    assert len(parts[0]) == n // 2
    nested = [[r.answer for r in load_records(f"muse:news/raw/forget,part=1-{b}/2")] for b in (1, 2)]
    assert nested == [parts[0], texts]
    # limit first, then part: the halves of the first 2 documents
    assert [r.answer for r in load_records("muse:news/raw/forget,limit=2,part=2/2")] == texts[1:2]
    assert muse_data.select_part(list(range(10)), (2, 3, 4)) == [2, 3, 4, 5, 6]   # ⌊10/4⌋=2 .. ⌊30/4⌋=7
    for bad in ("0/2", "3/2", "2-1/4", "a/b", "1/0"):
        with pytest.raises(DataError, match=f"part='{re.escape(bad)}' must be k/N"):
            load_records(f"muse:news/raw/forget,part={bad}")
    with pytest.raises(DataError, match="is empty; use fewer parts"):
        load_records("muse:news/raw/forget,limit=1,part=1/2")

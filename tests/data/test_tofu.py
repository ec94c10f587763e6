import json

import pytest

from unlearnkit.data import DataError, load_tofu, read_qa_jsonl, retain_split_for
from unlearnkit.data.tofu import holdout_split_for


@pytest.mark.parametrize("split,n", [("forget01", 40), ("forget05", 200), ("forget10", 400), ("full", 4000),
                                     ("retain90", 3600), ("retain99", 3960), ("holdout01", 40),
                                     ("forget01_perturbed", 40), ("retain_perturbed", 400),
                                     ("real_authors_perturbed", 100), ("world_facts_perturbed", 117)])
def test_official_sizes(tofu_dir, split, n):
    assert len(load_tofu(split, source=tofu_dir)) == n


def test_retain_is_derived_and_disjoint(tofu_dir):
    assert retain_split_for("forget05") == "retain95" and holdout_split_for("forget10") == "holdout10"
    full = load_tofu("full", source=tofu_dir)
    for pct in (1, 5, 10):
        forget = load_tofu(f"forget{pct:02d}", source=tofu_dir)
        retain = load_tofu(retain_split_for(f"forget{pct:02d}"), source=tofu_dir)
        assert [r.question for r in retain + forget] == [r.question for r in full]
        assert {r.tags["author"] for r in forget} == set(range(200 - 2 * pct, 200))


def test_perturbed_fields(tofu_dir):
    rec = load_tofu("forget01_perturbed", source=tofu_dir)[0]
    assert rec.paraphrased_answer and len(rec.perturbed_answers) == 5
    mc = load_tofu("real_authors", source=tofu_dir)[0]
    assert mc.answer == "William Shakespeare" and "William Shakespeare" not in mc.perturbed_answers


def test_malformed_line_names_file_and_line(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{"question": "q", "answer": "a"}\n{"question": "q2", "answer": \n')
    with pytest.raises(DataError, match=r"bad\.json:2: malformed JSON"):
        read_qa_jsonl(p)


def test_missing_field_names_field(tmp_path):
    p = tmp_path / "f.json"
    p.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n" + json.dumps({"question": "q"}) + "\n")
    with pytest.raises(DataError, match=r"f\.json:2: missing field 'answer'"):
        read_qa_jsonl(p)


def test_wrong_type_and_empty(tmp_path):
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"question": "q", "answer": "a", "perturbed_answer": "x"}) + "\n")
    with pytest.raises(DataError, match=r"t\.json:1: field 'perturbed_answer' must be a list"):
        read_qa_jsonl(p)
    e = tmp_path / "empty.json"
    e.write_text("\n")
    with pytest.raises(DataError, match="empty"):
        read_qa_jsonl(e)


def test_unknown_split(tofu_dir):
    with pytest.raises(DataError, match="unknown TOFU split 'forget02'"):
        load_tofu("forget02", source=tofu_dir)


@pytest.fixture()
def offline_nowhere(tmp_path, monkeypatch):
    """No $UNLEARNKIT_TOFU_DIR, no shared/data/tofu above the working directory, and a hub that cannot be reached."""
    import datasets

    def unreachable(*a, **k):
        raise ConnectionError("Couldn't reach 'locuslab/TOFU' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.delenv("UNLEARNKIT_TOFU_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    return tmp_path


def test_missing_tofu_offline_is_a_data_error_naming_where_it_looked(offline_nowhere):
    with pytest.raises(DataError) as err:
        load_tofu("forget01")
    msg = str(err.value)
    assert "UNLEARNKIT_TOFU_DIR" in msg and str(offline_nowhere / "shared" / "data" / "tofu") in msg
    assert "locuslab/TOFU" in msg and "ConnectionError" in msg and "source=" in msg


def test_tofu_dir_variable_naming_no_folder_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARNKIT_TOFU_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"UNLEARNKIT_TOFU_DIR=.*nowhere.* is not a folder"):
        load_tofu("forget01")


def test_missing_tofu_offline_is_a_cli_error_not_a_traceback(offline_nowhere):
    from typer.testing import CliRunner

    from unlearnkit.cli import app

    res = CliRunner().invoke(app, ["info", "data=tofu:forget01"])
    assert res.exit_code == 2 and "UNLEARNKIT_TOFU_DIR" in res.output, res.output

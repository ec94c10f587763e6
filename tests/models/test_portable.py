"""Saved folders load in transformers 4.x too (issue 15.4) and tokenizers are written atomically (issue 21.7)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from unlearnkit.data.records import QARecord
from unlearnkit.models.tiny import tiny_llama
from unlearnkit.runs import open_run, save_model_atomically

# tokenizer classes transformers 4.45 knows for a tokenizer.json-backed tokenizer (5.x keeps them as names)
CLASSES_IN_4_45 = {"PreTrainedTokenizerFast", "GPT2TokenizerFast", "LlamaTokenizerFast", "GPT2Tokenizer"}
TEMPLATE = "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}"
TEXT = "Question: Who wrote the book ? Answer: Alia Karo , in 1999 . It's hers ."


@pytest.fixture()
def saved(tmp_path, tiny_tokenizer):
    tok = PreTrainedTokenizerFast(tokenizer_object=tiny_tokenizer.backend_tokenizer, eos_token=tiny_tokenizer.eos_token,
                                  pad_token=tiny_tokenizer.pad_token)
    tok.chat_template = TEMPLATE
    model = tiny_llama(len(tok), hidden=32, layers=1, heads=2, intermediate=64, pad_token_id=tok.pad_token_id,
                       eos_token_id=tok.eos_token_id)
    model.config.rope_parameters = {"rope_theta": 100000.0, "rope_type": "default"}  # SmolLM2's θ, not the default
    model = type(model)(model.config)
    out = save_model_atomically(model, tok, tmp_path / "model")
    return out, model, tok


def test_saved_tokenizer_config_names_a_class_both_versions_know(saved):
    out, _, tok = saved
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] in CLASSES_IN_4_45, cfg["tokenizer_class"]
    assert hasattr(transformers, cfg["tokenizer_class"])
    assert cfg["chat_template"] == TEMPLATE  # 4.45 reads the template only from here
    assert cfg["clean_up_tokenization_spaces"] is False  # 5.x's decoding, pinned for 4.x
    again = AutoTokenizer.from_pretrained(out)
    assert again(TEXT)["input_ids"] == tok(TEXT)["input_ids"]
    assert again.decode(again(TEXT)["input_ids"]) == tok.decode(tok(TEXT)["input_ids"])
    assert again.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == "<user>hi\n"
    assert (again.eos_token_id, again.pad_token_id) == (tok.eos_token_id, tok.pad_token_id)


def test_saved_model_config_carries_the_rope_theta_4x_reads(saved):
    out, model, _ = saved
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["rope_theta"] == 100000.0 and cfg["torch_dtype"] == "float32"   # 4.x: default 10000 otherwise
    again = AutoModelForCausalLM.from_pretrained(out)
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, model.eval()(ids).logits, rtol=0, atol=0)


def test_a_kill_while_the_tiny_tokenizer_is_written_leaves_nothing_half_written(tmp_path, monkeypatch):
    from unlearnkit.train.finetune import FinetuneConfig, _tiny

    cfg = FinetuneConfig(model="tiny", tiny_hidden=64, tiny_layers=1, tiny_vocab=300, run=str(tmp_path / "ft"))
    records = [QARecord(question=f"What is fact {i}?", answer=f"Fact {i} is true.") for i in range(20)]
    run = open_run(cfg.run)
    real_save = PreTrainedTokenizerFast.save_pretrained

    def killed(self, save_directory, *a, **k):

        Path(save_directory).mkdir(parents=True, exist_ok=True)
        (Path(save_directory) / "tokenizer_config.json").write_text("")  # what a kill mid-write leaves
        raise KeyboardInterrupt("killed while writing the tokenizer")

    monkeypatch.setattr(PreTrainedTokenizerFast, "save_pretrained", killed)
    with pytest.raises(KeyboardInterrupt):
        _tiny(cfg, records, run)
    assert not (run.path / "tokenizer").exists()
    monkeypatch.setattr(PreTrainedTokenizerFast, "save_pretrained", real_save)
    _, tok = _tiny(cfg, records, run)          # the rerun trains and writes it
    _, cached = _tiny(cfg, records, run)       # and the next one reads it back
    assert cached("Fact 3 is true.")["input_ids"] == tok("Fact 3 is true.")["input_ids"]
    assert json.loads((run.path / "tokenizer" / "tokenizer_config.json").read_text())["tokenizer_class"] in CLASSES_IN_4_45

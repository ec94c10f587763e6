"""trainable=: parameter selection by glob / regex, WMDP's down-projection preset, clear errors."""
from __future__ import annotations

import pytest

from unlearnkit.models import tiny_llama
from unlearnkit.models.trainable import down_proj_patterns, freeze_except


def _model():
    return tiny_llama(64, hidden=32, layers=4, heads=2, intermediate=64)


def test_wmdp_down_projections_only():
    model = _model()
    chosen = freeze_except(model, down_proj_patterns(3))
    assert chosen == [f"model.layers.{i}.mlp.down_proj.weight" for i in (1, 2, 3)]
    assert [n for n, p in model.named_parameters() if p.requires_grad] == chosen


def test_glob_and_regex_select_the_same():
    a, b = _model(), _model()
    glob = freeze_except(a, ["model.layers.[12].self_attn.*_proj.weight"])
    regex = freeze_except(b, [r"re:model\.layers\.(1|2)\.self_attn\.[a-z]_proj\.weight"])
    assert glob == regex and len(glob) == 8


def test_empty_selection_trains_everything_and_typos_are_refused():
    model = _model()
    assert len(freeze_except(model, [])) == len(list(model.parameters()))
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match=r"matches no parameter.*names look like model\.embed_tokens"):
        freeze_except(model, ["layers.1.mlp.down_proj.weight"])  # missing the `model.` prefix
    with pytest.raises(ValueError, match="not a valid regular expression"):
        freeze_except(model, ["re:model.layers.(1"])
    with pytest.raises(ValueError, match="below block 0"):
        down_proj_patterns(1)

import re

import pytest
import torch

from saelora_core.adapter.generate import generate
from saelora_core.adapter.hooks import write_matrix
from saelora_core.adapter.sae_lora import SaeLora
from saelora_core.analysis.behaviour import wilson_interval
from saelora_core.analysis.playground import (
    answer_tokens,
    behaviour_rate,
    fresh_prompts,
    playground_text,
    rate_line,
    side_by_side,
    try_adapter,
)
from saelora_core.cli.app import main
from saelora_core.models.chat import format_turn
from saelora_core.testing import save_planted_adapter

PROMPTS = ["What is 2+2?", "Say hi"]


def dense_adapter(tiny_mas, s=(1.5, -0.5)) -> SaeLora:
    lora = SaeLora(tiny_mas.sae.cfg.d_sae, rank=2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lora.s.copy_(torch.tensor(s))
    return lora


def test_with_s_zero_adapter_answers_are_the_base_answers(tiny_mas):
    lora = dense_adapter(tiny_mas, s=(0.0, 0.0))
    pg = try_adapter(tiny_mas, lora, PROMPTS, max_new_tokens=10)
    assert [a.adapter for a in pg.answers] == [a.base for a in pg.answers]
    assert [a.base for a in pg.answers] == generate(tiny_mas, PROMPTS, None, max_new_tokens=10)
    for a in pg.answers:
        assert (a.tokens["edit_norm"] == 0).all()
        assert (a.tokens["writes"] == "").all()


def test_answers_are_the_batched_greedy_answers(tiny_mas):
    lora = dense_adapter(tiny_mas)
    pg = try_adapter(tiny_mas, lora, PROMPTS, max_new_tokens=10)
    assert [a.adapter for a in pg.answers] == generate(tiny_mas, PROMPTS, lora, max_new_tokens=10)
    assert pg.answers[0].adapter != pg.answers[0].base  # the adapter changes this answer


def test_per_token_edit_equals_the_hook_edit_computed_directly(tiny_mas):
    lora = dense_adapter(tiny_mas)
    prompt, answer = "What is 2+2?", "Four, I think."
    df = answer_tokens(tiny_mas, lora, prompt, answer, k_latents=2)
    turn = format_turn(tiny_mas.tokenizer, prompt, answer, tiny_mas.chat_format)
    _, cache = tiny_mas.model.run_with_cache(turn.tokens[None], names_filter=tiny_mas.hook_name)
    z = tiny_mas.sae.encode(cache[tiny_mas.hook_name][0])
    dz = lora.delta(z).detach()
    want = (dz @ write_matrix(tiny_mas.sae)).norm(dim=-1)
    positions = torch.nonzero(turn.assistant_mask).flatten().tolist()
    assert df["pos"].tolist() == positions
    torch.testing.assert_close(
        torch.tensor(df["edit_norm"].tolist()), want[positions], rtol=1e-5, atol=1e-6
    )
    support = set(torch.nonzero(lora.a.ne(0).any(1)).flatten().tolist())
    w_norm = write_matrix(tiny_mas.sae).norm(dim=-1)
    for row in df.itertuples():
        p = row.pos
        assert all(lat in support and z[p, lat] > 0 for lat in row.read_latents)
        torch.testing.assert_close(torch.tensor(row.read_acts), z[p, row.read_latents].detach())
        torch.testing.assert_close(torch.tensor(row.write_dz), dz[p, row.write_latents])
        top = (dz[p].abs() * w_norm).topk(2).indices.tolist()
        assert row.write_latents == top


def test_reads_list_only_the_support_latents_that_fire(tiny_mas, tmp_path):
    lora = save_planted_adapter(tiny_mas, tmp_path / "planted")  # reads 7 and 3, writes 12, 50
    df = answer_tokens(tiny_mas, lora, "What is 2+2?", "Four plus four is eight.")
    assert set().union(*map(set, df["read_latents"])) <= {3, 7}
    assert set().union(*map(set, df["write_latents"])) <= {12, 50}
    quiet = df[df["read_latents"].map(len) == 0]
    assert (quiet["edit_norm"] == 0).all()


def test_empty_answer_has_no_token_rows(tiny_mas):
    df = answer_tokens(tiny_mas, dense_adapter(tiny_mas), "Say hi", "  ")
    assert df.empty and "edit_norm" in df.columns


def test_empty_prompt_is_a_clear_error(tiny_mas):
    with pytest.raises(ValueError, match="non-empty prompt"):
        try_adapter(tiny_mas, dense_adapter(tiny_mas), [" "])


def test_batch_rate_with_s_zero_equals_base_and_has_wilson_intervals(tiny_mas):
    rows = fresh_prompts(2)
    assert [r["in_topic"] for r in rows] == [True, True, False, False]
    res = behaviour_rate(
        tiny_mas, dense_adapter(tiny_mas, (0.0, 0.0)), detector=lambda t: "c" in t,
        rows=rows, max_new_tokens=6,
    )  # fmt: skip
    r = res.rates.set_index(["condition", "split"])
    for split in ("in_topic", "off_topic"):
        assert r.loc[("adapter", split), "rate"] == r.loc[("base", split), "rate"]
        hits = round(r.loc[("adapter", split), "rate"] * 2)
        assert (r.loc[("adapter", split), "low"], r.loc[("adapter", split), "high"]) == (
            wilson_interval(hits, 2)
        )
    line = rate_line(res)
    assert "n = 2 + 2 fresh prompts" in line
    assert re.search(r"in-topic \d\.\d\d \[\d\.\d\d, \d\.\d\d\] vs base", line)


def test_playground_text_shows_both_answers_and_the_token_table(tiny_mas):
    pg = try_adapter(
        tiny_mas, dense_adapter(tiny_mas), PROMPTS[:1], max_new_tokens=8, detector="uppercase"
    )
    text = playground_text(pg)
    assert "prompt: What is 2+2?" in text
    assert "base [uppercase: no]" in text
    assert "edit_norm" in text and "reads" in text and "writes" in text
    assert "[" + "'" not in text and "]," not in text  # no Python list repr
    for number in re.findall(r"\d+\.\d+", text):
        assert len(number.replace(".", "").lstrip("0")) <= 4


def test_side_by_side_wraps_both_columns():
    out = side_by_side("a " * 30, "b", width=20).splitlines()
    assert out[0].startswith("base") and "| adapter" in out[0]
    assert all(len(line.split("|")[0]) == 22 for line in out[2:])
    assert out[2].endswith("| b") and len(out) == 2 + 3


def test_cli_try_prints_the_playground(tiny_mas, tmp_path, monkeypatch, capsys):
    from saelora_core.models import presets

    save_planted_adapter(tiny_mas, tmp_path / "planted")
    monkeypatch.setattr(presets, "load_model_and_sae", lambda preset, **kw: tiny_mas)
    rc = main(["try", str(tmp_path / "planted"), "What is 2+2?", "--max-new-tokens", "6"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "prompt: What is 2+2?" in out and "adapter (resid_add)" in out
    assert "edit_norm" in out


def test_cli_try_batch_without_a_detector_says_what_to_pass(
    tiny_mas, tmp_path, monkeypatch, capsys
):
    from saelora_core.models import presets

    save_planted_adapter(tiny_mas, tmp_path / "planted")
    monkeypatch.setattr(presets, "load_model_and_sae", lambda preset, **kw: tiny_mas)
    rc = main(["try", str(tmp_path / "planted"), "Hi", "--max-new-tokens", "4", "--batch", "2"])
    assert rc == 2
    assert "--detector" in capsys.readouterr().err


def test_playground_html_shows_the_rate_answers_and_tokens(tiny_mas):
    from saelora_core.analysis.playground import playground_html

    lora = dense_adapter(tiny_mas)
    pg = try_adapter(tiny_mas, lora, ["What is 2+2?"], max_new_tokens=6, detector="uppercase")
    rate = behaviour_rate(
        tiny_mas, lora, detector="uppercase", rows=fresh_prompts(1), max_new_tokens=4
    )
    out = playground_html(pg, rate)
    assert out.startswith("<div class='saelora-playground'") and "<script" not in out
    assert "uppercase rate in-topic" in out and "n = 1 + 1 fresh prompts" in out
    assert "edit_norm" in out and "adapter (resid_add) · uppercase: " in out

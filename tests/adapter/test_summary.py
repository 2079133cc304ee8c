"""The one adapter summary: the notebooks' line and the report's table from the same facts."""


def test_adapter_summary(tiny_mas, tiny_env):
    from saelora_core import load_lora
    from saelora_core.adapter.summary import adapter_info, summary_line

    text = summary_line(adapter_info(load_lora(tiny_env["SAELORA_LORA"])))
    assert "L0 read 64, 64 · write 64, 64 of 64 per vector" in text and "{" not in text


def test_summary_table_matches_the_line(tiny_mas, tiny_env):
    from saelora_core import load_lora
    from saelora_core.adapter.summary import adapter_info, summary_table

    info = adapter_info(load_lora(tiny_env["SAELORA_LORA"]))
    table = dict(zip(summary_table(info)["field"], summary_table(info)["value"], strict=True))
    assert table["L0 read / write"] == "64, 64 / 64, 64"  # readable, no list repr
    assert table["rank"] == "2" and table["s"] == "1.5, -0.5" and table["preset"] == "tiny"

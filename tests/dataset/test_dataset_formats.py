"""Input format detection and conversion, and mlx-lm output rows (in-memory and tmp files, no network)."""

from __future__ import annotations

import json

import pytest

from dantes_mlx.dataset.formats import (conversation_problems, detect_format, read_examples, render_text, to_output_row,
                                        unwrap_inst)
from dantes_mlx.errors import InputError

Q, A = "Qui êtes-vous ?", "Je suis Edmond Dantès, marin du Pharaon."
EXPECTED = [{"role": "user", "content": Q}, {"role": "assistant", "content": A}]

ROWS = {
    "pairs": {"instruction": Q, "response": A, "source_id": "c12", "citation": "...", "model": "m",
              "prompt_version": "v1"},
    "sharegpt": {"conversations": [{"from": "human", "value": Q}, {"from": "gpt", "value": A}]},
    "chat": {"messages": [{"role": "user", "content": Q}, {"role": "assistant", "content": A}]},
    "alpaca": {"instruction": Q, "input": "", "output": A},
    "completions": {"prompt": Q, "completion": A},
    "trl": {"prompt": [{"role": "user", "content": Q}], "completion": [{"role": "assistant", "content": A}]},
}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("kind", sorted(ROWS))
def test_each_format_is_detected_and_converted(tmp_path, kind):
    path = write_jsonl(tmp_path / f"{kind}.jsonl", [ROWS[kind], ROWS[kind]])
    examples, found, cleaned = read_examples(path)
    assert found == kind and cleaned == 0
    assert [ex.messages for ex in examples] == [EXPECTED, EXPECTED]
    assert examples[1].where == f"{path}:2"


def test_pairs_keep_their_source_id_and_labelled_rows_their_label(tmp_path):
    labelled = {"prompt": "Ma fiche de paie est fausse.", "completion": "RH", "source_id": "mail-7", "label": "RH"}
    (pair,), _, _ = read_examples(write_jsonl(tmp_path / "p.jsonl", [ROWS["pairs"]]))
    (mail,), kind, _ = read_examples(write_jsonl(tmp_path / "l.jsonl", [labelled]))
    assert pair.source_id == "c12" and pair.fields["citation"] == "..."
    assert kind == "completions" and mail.label == "RH" and mail.source_id == "mail-7"


def test_sharegpt_system_and_alpaca_input_are_kept(tmp_path):
    share = {"conversations": [{"from": "system", "value": "Sois bref."}, {"from": "human", "value": Q},
                               {"from": "gpt", "value": A}, {"from": "human", "value": "Et ensuite ?"},
                               {"from": "gpt", "value": "Le château d'If."}]}
    alpaca = {"instruction": "Traduis en anglais.", "input": "Bonjour", "output": "Hello", "system": "Tu traduis."}
    (ex,), _, _ = read_examples(write_jsonl(tmp_path / "s.jsonl", [share]))
    assert [m["role"] for m in ex.messages] == ["system", "user", "assistant", "user", "assistant"]
    (al,), _, _ = read_examples(write_jsonl(tmp_path / "a.jsonl", [alpaca]))
    assert al.messages == [{"role": "system", "content": "Tu traduis."},
                           {"role": "user", "content": "Traduis en anglais.\n\nBonjour"},
                           {"role": "assistant", "content": "Hello"}]


def test_inst_markup_baked_into_a_prompt_is_unwrapped(tmp_path):
    rows = [{"prompt": f"<s>[INST] {Q} [/INST]", "completion": f"{A}</s>"},
            {"prompt": "[INST] <<SYS>>\nTu es Dantès.\n<</SYS>>\n\nD'où venez-vous ? [/INST]",
             "completion": "De Marseille."}]
    first, second = read_examples(write_jsonl(tmp_path / "inst.jsonl", rows))[0]
    assert first.messages == EXPECTED
    assert second.messages == [{"role": "system", "content": "Tu es Dantès."},
                               {"role": "user", "content": "D'où venez-vous ?"},
                               {"role": "assistant", "content": "De Marseille."}]


def test_text_rows_with_inst_become_conversations_and_plain_text_stays_text(tmp_path):
    rows = [{"text": f"<s>[INST] {Q} [/INST] {A}</s>[INST] Et Mercédès ? [/INST] Je l'aimais.</s>"},
            {"text": "Le 24 février 1815, la vigie de Notre-Dame de la Garde signala le trois-mâts le Pharaon."}]
    inst, plain = read_examples(write_jsonl(tmp_path / "t.jsonl", rows))[0]
    assert [m["content"] for m in inst.messages] == [Q, A, "Et Mercédès ?", "Je l'aimais."]
    assert plain.messages == [] and plain.text.startswith("Le 24 février")
    assert to_output_row(plain, "text", None)["text"] == plain.text
    with pytest.raises(InputError, match="use --format text") as err:
        to_output_row(plain, "chat", None)
    assert err.value.line == 2


def test_mixed_formats_in_one_file_name_the_line(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [ROWS["chat"], ROWS["chat"], ROWS["sharegpt"]])
    with pytest.raises(InputError) as err:
        read_examples(path)
    assert err.value.line == 3 and "ShareGPT" in str(err.value) and "line 1" in str(err.value)
    assert str(path) in str(err.value)


def test_unknown_row_and_broken_json_and_bad_utf8_name_the_line(tmp_path):
    with pytest.raises(InputError, match="not recognised") as err:
        read_examples(write_jsonl(tmp_path / "u.jsonl", [ROWS["chat"], {"question": Q}]))
    assert err.value.line == 2
    broken = tmp_path / "b.jsonl"
    broken.write_text(json.dumps(ROWS["chat"]) + "\n\n{\"messages\": [\n", encoding="utf-8")
    with pytest.raises(InputError, match="invalid JSON") as err:
        read_examples(broken)
    assert err.value.line == 3
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(json.dumps(ROWS["chat"]).encode() + b"\n" + b'{"text": "caf\xe9"}\n')
    with pytest.raises(InputError, match="UTF-8") as err:
        read_examples(bad)
    assert err.value.line == 2


def test_unknown_sharegpt_role_is_an_error_with_line(tmp_path):
    row = {"conversations": [{"from": "narrator", "value": Q}, {"from": "gpt", "value": A}]}
    with pytest.raises(InputError, match="narrator") as err:
        read_examples(write_jsonl(tmp_path / "r.jsonl", [ROWS["sharegpt"], row]))
    assert err.value.line == 2


def test_json_list_and_csv_inputs(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"data": [ROWS["alpaca"], ROWS["alpaca"]]}), encoding="utf-8")
    examples, kind, _ = read_examples(tmp_path / "a.json")
    assert kind == "alpaca" and len(examples) == 2 and examples[0].messages == EXPECTED
    (tmp_path / "p.csv").write_text('prompt,completion,label\n"Ma paie, encore",RH,RH\nSpam gratuit,SPAM,SPAM\n',
                                    encoding="utf-8")
    examples, kind, _ = read_examples(tmp_path / "p.csv")
    assert kind == "completions" and examples[0].messages[0]["content"] == "Ma paie, encore"
    assert [ex.line for ex in examples] == [2, 3] and examples[1].label == "SPAM"


def test_csv_cell_keeps_its_blank_lines_and_rows_their_file_line(tmp_path):
    (tmp_path / "m.csv").write_bytes('prompt,completion\r\n"Bonjour,\r\n\r\nJe voudrais un congé.",RH\r\n'
                                     '\r\nLe VPN coupe,Support\r\n'.encode("utf-8"))
    examples, kind, _ = read_examples(tmp_path / "m.csv")
    assert kind == "completions"
    assert examples[0].messages[0]["content"] == "Bonjour,\n\nJe voudrais un congé."
    assert examples[1].line == 6  # lines of the file, blank ones counted


def test_control_characters_are_removed_and_counted(tmp_path):
    row = {"messages": [{"role": "user", "content": "Bon\x00jour\x1b ?"}, {"role": "assistant", "content": A}]}
    (ex,), _, cleaned = read_examples(write_jsonl(tmp_path / "c.jsonl", [row]))
    assert cleaned == 1 and ex.messages[0]["content"] == "Bonjour ?"


def test_detect_format_rejects_non_objects():
    assert detect_format([1, 2]) is None and detect_format({"foo": 1}) is None


def test_output_rows_keep_source_id_and_add_the_system_prompt(tmp_path):
    (ex,), _, _ = read_examples(write_jsonl(tmp_path / "p.jsonl", [ROWS["pairs"]]))
    chat = to_output_row(ex, "chat", "Tu es Dantès.")
    assert chat == {"messages": [{"role": "system", "content": "Tu es Dantès."}] + EXPECTED, "source_id": "c12"}
    assert to_output_row(ex, "completions", None) == {"prompt": Q, "completion": A, "source_id": "c12"}
    text = to_output_row(ex, "text", "Tu es Dantès.")["text"]
    assert text == f"[INST] Tu es Dantès.\n\n{Q} [/INST] {A}"
    assert ex.messages == EXPECTED  # the example itself is not modified


def test_multi_turn_rows_do_not_fit_completions(tmp_path):
    share = {"conversations": [{"from": "human", "value": Q}, {"from": "gpt", "value": A},
                               {"from": "human", "value": "Et ensuite ?"}, {"from": "gpt", "value": "If."}]}
    (ex,), _, _ = read_examples(write_jsonl(tmp_path / "m.jsonl", [share]))
    with pytest.raises(InputError, match="--format chat"):
        to_output_row(ex, "completions", None)


def test_render_text_multi_turn_fallback_closes_earlier_turns():
    messages = EXPECTED + [{"role": "user", "content": "Et ensuite ?"}, {"role": "assistant", "content": "If."}]
    assert render_text(messages) == f"[INST] {Q} [/INST] {A}</s>[INST] Et ensuite ? [/INST] If."
    assert unwrap_inst("pas de balise") is None


@pytest.mark.parametrize("messages, expected", [
    ([{"role": "user", "content": Q}], "missing assistant turn"),
    ([{"role": "user", "content": Q}, {"role": "user", "content": Q}, {"role": "assistant", "content": A}],
     "two user turns in a row"),
    ([{"role": "user", "content": Q}, {"role": "assistant", "content": "  "}], "empty assistant content"),
    ([{"role": "assistant", "content": A}], "expected user"),
    ([{"role": "user", "content": Q}, {"role": "system", "content": "x"}, {"role": "assistant", "content": A}],
     "only a leading system"),
    ([{"role": "function", "content": Q}], "unknown role"),
    ([{"role": "tool", "content": Q}], "does not follow an assistant turn with tool_calls"),  # mlx-lm's tools rows
    ([], "non-empty list"),
])
def test_conversation_problems(messages, expected):
    assert any(expected in p for p in conversation_problems(messages))


def test_a_valid_conversation_has_no_problems():
    assert conversation_problems([{"role": "system", "content": "s"}] + EXPECTED) == []

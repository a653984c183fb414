"""Files as spreadsheets save them (French Excel CSV, BOM, CRLF, cp1252, empty cells), read by `prepare`
and by `generate --labels/--facts` (tmp files, no network)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from dantes_mlx.config import GenerateConfig, PrepareConfig
from dantes_mlx.dataset.formats import read_records
from dantes_mlx.dataset.prepare import prepare
from dantes_mlx.errors import InputError
from dantes_mlx.generate.sources import labels_to_rows, load_facts

# What "CSV (séparateur: point-virgule)" gives: ';', CRLF, a quoted cell holding an e-mail's paragraphs.
EXCEL = ('Message;Service\r\n"Bonjour,\r\n\r\nma facture de mars est fausse.\r\nMerci";Comptabilité\r\n'
         '"Mon ordinateur ne démarre plus";Informatique\r\n"Je souhaite poser des congés en août";RH\r\n')


def test_french_excel_csv_with_bom_semicolons_and_multiline_cells(tmp_path):
    source = tmp_path / "mails.csv"
    source.write_bytes(b"\xef\xbb\xbf" + EXCEL.encode("utf-8"))
    records = read_records(source)
    assert [line for line, _ in records] == [2, 6, 7]  # where each record starts, not where it ends
    assert records[0][1] == {"Message": "Bonjour,\n\nma facture de mars est fausse.\nMerci",
                             "Service": "Comptabilité"}
    summary = labels_to_rows(source, tmp_path / "labels.jsonl", GenerateConfig())
    rows = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text("utf-8").splitlines()]
    assert summary.kept == 3 and [r["label"] for r in rows] == ["Comptabilité", "Informatique", "RH"]
    assert rows[0]["prompt"].endswith("\n\nBonjour,\n\nma facture de mars est fausse.\nMerci")


def test_prepare_reads_a_semicolon_csv_and_names_rows_by_their_first_line(tmp_path):
    source = tmp_path / "pc.csv"
    source.write_bytes(b"\xef\xbb\xbf" + EXCEL.replace("Message;Service", "prompt;completion").encode("utf-8"))
    report = prepare([source], tmp_path / "out", PrepareConfig(split="100/0/0", system_prompt=False))
    rows = [json.loads(line) for line in (tmp_path / "out" / "train.jsonl").read_text("utf-8").splitlines()]
    assert report.inputs == [(str(source), "completions", 3)] and not report.cleaned
    assert sorted(r["source_id"] for r in rows) == ["pc:2", "pc:6", "pc:7"]


def test_cp1252_file_names_its_line_and_the_codec_to_convert_from(tmp_path):
    source = tmp_path / "mails.csv"
    source.write_bytes(EXCEL.replace("ma facture", "mon cœur").encode("cp1252"))
    for read in (read_records, lambda p: labels_to_rows(p, tmp_path / "o.jsonl", GenerateConfig())):
        with pytest.raises(InputError) as err:
            read(source)
        # iconv -f latin1 would turn 'œ' into an invisible control character, which cleaning then deletes.
        assert err.value.line == 4 and "iconv -f cp1252" in str(err.value)


def test_an_empty_label_is_set_aside_and_the_label_list_stays_clean(tmp_path):
    source = tmp_path / "mails.csv"
    source.write_text("Mail;Equipe\na b;X\nc d;\ne f;Y\n;Z\n", encoding="utf-8")
    summary = labels_to_rows(source, tmp_path / "labels.jsonl", GenerateConfig())
    rows = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text("utf-8").splitlines()]
    assert summary.kept == 2 and summary.rejected == Counter({"empty_label": 1, "empty_text": 1})
    assert ": X, Y." in rows[0]["prompt"]  # not ": , X, Y, Z."
    rejects = [json.loads(line) for line in (tmp_path / "labels.rejects.jsonl").read_text("utf-8").splitlines()]
    assert [(r["line"], r["reason"]) for r in rejects] == [(3, "empty_label"), (5, "empty_text")]


def test_empty_or_missing_fact_fields_say_which(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("term,definition\nRAM,\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"empty\.csv:2: record 2 has an empty definition") as err:
        load_facts(empty)
    assert "fill it in" in str(err.value)
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"term": "RAM", "what": "x", "other": "y"}\n', encoding="utf-8")
    with pytest.raises(InputError, match="has no definition/fact field"):
        load_facts(missing)


def test_a_jsonl_with_a_bom_or_bad_bytes_is_read_or_named(tmp_path):
    source = tmp_path / "mails.jsonl"
    source.write_bytes(b'\xef\xbb\xbf{"text": "Bonjour", "label": "RH"}\n{"text": "caf\xe9", "label": "RH"}\n')
    with pytest.raises(InputError) as err:
        labels_to_rows(source, tmp_path / "o.jsonl", GenerateConfig())
    assert err.value.line == 2
    source.write_bytes(b'\xef\xbb\xbf{"text": "Bonjour", "label": "RH"}\n')
    assert labels_to_rows(source, tmp_path / "o.jsonl", GenerateConfig()).kept == 1

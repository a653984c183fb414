"""Footnotes and transcriber's notes leave the clean text (kept in its metadata) with their anchors.

In-memory, no network. Run: pytest tests/book/test_gutenberg_notes.py -q
"""

from __future__ import annotations

import json

from dantes_mlx.book.clean import clean_file, clean_text
from dantes_mlx.book.notes import move_notes
from dantes_mlx.config import CleanConfig

HEADER = "*** START OF THE PROJECT GUTENBERG EBOOK LE CONTE ***\n\n\n"
FOOTER = "\n\n*** END OF THE PROJECT GUTENBERG EBOOK LE CONTE ***\n"


def notes_of(paragraphs: list[str]) -> tuple[list[str], list[dict]]:
    kept, lines, notes = move_notes(paragraphs, list(range(1, len(paragraphs) + 1)))
    assert len(lines) == len(kept)
    return kept, notes


def test_labelled_note_after_its_anchor_is_moved_and_the_anchor_removed():
    kept, notes = notes_of(["--Je suis né à Marseille [1], dit Dantès.", "Il sourit[2].",
                            "[1] Ville du sud de la France.", "[2] Note de l'éditeur."])
    assert kept == ["--Je suis né à Marseille, dit Dantès.", "Il sourit."]
    assert [(n["label"], n["text"], n["line"], n["anchor_removed"]) for n in notes] == [
        ("1", "[1] Ville du sud de la France.", 3, True), ("2", "[2] Note de l'éditeur.", 4, True)]


def test_notes_numbered_per_chapter_take_the_nearest_anchor():
    kept, notes = notes_of(["Un[1].", "[1] Première.", "CHAPITRE II", "Deux[1].", "[1] Seconde."])
    assert kept == ["Un.", "CHAPITRE II", "Deux."]
    assert [n["text"] for n in notes] == ["[1] Première.", "[1] Seconde."]


def test_bracketed_blocks_over_several_paragraphs_and_transcriber_notes():
    kept, notes = notes_of(["[Note du transcripteur : l'orthographe d'origine a été conservée.]",
                            "Il partit[A] le soir.",
                            "[Footnote A: Le 24 février.", "Ou le 25, selon d'autres.]",
                            "Fin."])
    assert kept == ["Il partit le soir.", "Fin."]
    assert notes[0]["label"] is None and notes[0]["text"].startswith("[Note du transcripteur")
    assert notes[1]["label"] == "A" and notes[1]["text"].endswith("selon d'autres.]") and notes[1]["anchor_removed"]


def test_what_only_looks_like_a_note_stays_text():
    paragraphs = ["[1] Un paragraphe qui commence ainsi, sans renvoi avant lui.",
                  "[Note 2: un crochet jamais fermé", "et le texte continue.", "Encore.", "Fin.",
                  "[Note 3: fermée] mais suivie de texte.", "Voir [sic] et [12]."]
    kept, notes = notes_of(paragraphs)
    assert kept == paragraphs and notes == []


def test_clean_file_keeps_the_notes_in_its_sidecar(tmp_path):
    raw = HEADER + ("CHAPITRE PREMIER\n\n--Je suis né à Marseille[1], dit Dantès, et\nj'y mourrai.\n\n"
                    "[1] Ville du sud de la France, où\ncommence le roman.\n") + FOOTER
    src = tmp_path / "conte.txt"
    src.write_text(raw, encoding="utf-8")
    clean_file(src, tmp_path / "clean" / "conte.txt", CleanConfig())
    text = (tmp_path / "clean" / "conte.txt").read_text(encoding="utf-8")
    assert text == "CHAPITRE PREMIER\n\n--Je suis né à Marseille, dit Dantès, et j'y mourrai.\n"
    meta = json.loads((tmp_path / "clean" / "conte.json").read_text(encoding="utf-8"))
    assert meta["notes_moved"] == 1
    assert meta["notes"][0]["text"] == "[1] Ville du sud de la France, où commence le roman."
    assert raw.split("\n")[meta["notes"][0]["line"] - 1].startswith("[1] Ville")


def test_a_book_without_notes_is_unchanged():
    body = "CHAPITRE PREMIER\n\nIl vit [Illustration] un [sic] navire.\n\n--Oui [1].\n"
    assert clean_text(HEADER + body + FOOTER).text == body

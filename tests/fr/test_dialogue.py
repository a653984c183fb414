"""Rule-based French dialogue: detection, incises, speakers, aliases; fr-litbank quality (in-memory, no network).

Run: /work/venv/bin/pytest tests/fr/test_dialogue.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import load_bench

from dantes_mlx.fr.dialogue import (all_speakers_rows, character_quotes, find_quotations, mentions_character, paragraphs, read_text)
from dantes_mlx.fr.speakers import is_character, normalise_speaker

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
LITBANK = SHARED / "fr-litbank-dev"
DANTES = ("Edmond Dantès", ["Edmond", "Dantès", "le comte", "Monte-Cristo", "Sinbad le marin",
                            "l'abbé Busoni", "lord Wilmore"])


def spoken(text: str, q) -> list[str]:
    return [text[a:b] for a, b in q.segments]


def assert_offsets(text: str, quotes) -> None:
    for q in quotes:
        assert text[q.start:q.end] == q.text
        assert q.segments[0][0] == q.start and q.segments[-1][1] == q.end
        for a, b in q.segments:
            assert q.start <= a < b <= q.end


def test_incise_with_inverted_subject_is_cut_out_and_names_the_speaker():
    text = "— Je viens, répondit le jeune homme, avec plaisir.\n"
    [q] = find_quotations(text)
    assert spoken(text, q) == ["— Je viens,", "avec plaisir."]
    assert (q.speaker, q.cue) == ("le jeune homme", "incise")
    assert text[q.speaker_start:q.speaker_end] == "le jeune homme"
    assert q.speech(text) == "Je viens, avec plaisir."
    assert_offsets(text, [q])


@pytest.mark.parametrize("incise, speaker", [
    ("s'écria Dantès", "Dantès"), ("reprit Mercédès", "Mercédès"), ("dit enfin le vieillard", "le vieillard"),
    ("lui demanda M. de Villefort", "M. de Villefort"), ("murmura l'abbé Faria", "l'abbé Faria"),
])
def test_speech_verbs_with_noun_subjects(incise, speaker):
    text = f"Ils se turent.\n\n— Nous verrons bien, {incise}. Partons.\n"
    [q] = find_quotations(text)
    assert q.speaker == speaker
    assert spoken(text, q) == ["— Nous verrons bien,", "Partons."]


def test_dit_il_resolves_to_the_last_man_named_and_elle_to_the_last_woman():
    text = ("Mercédès rougit. Elle baissa les yeux. Fernand se leva.\n\n— Edmond ! s'écria-t-elle.\n\n"
            "Dantès entra dans la chambre.\n\n— Me voici, dit-il.\n")
    first, second = find_quotations(text)
    assert (first.speaker, first.mention) == ("Mercédès", "elle")
    assert (second.speaker, second.mention, second.cue) == ("Dantès", "il", "incise")


def test_speaker_named_before_the_reply():
    text = ("Dantès se leva et dit : « Je pars demain. »\n\n"
            "Le vieillard le regarda longuement, puis il murmura :\n\n— Mon fils.\n")
    first, second = find_quotations(text)
    assert (first.speaker, first.cue) == ("Dantès", "before")
    assert (second.speaker, second.mention, second.cue) == ("Le vieillard", "il", "previous")


def test_turn_alternation_between_two_speakers():
    text = ("Villefort regarda le jeune homme.\n\n— Votre nom ? demanda Villefort.\n\n"
            "— Edmond Dantès, répondit le jeune homme.\n\n— Votre âge ?\n\n— Dix-neuf ans.\n")
    speakers = [(q.speaker, q.cue) for q in find_quotations(text)]
    assert speakers == [("Villefort", "incise"), ("le jeune homme", "incise"),
                        ("Villefort", "alternation"), ("le jeune homme", "alternation")]


def test_alternation_skips_the_person_addressed():
    text = ("— Bonjour, dit Caderousse.\n\n— Bonjour, répondit Danglars.\n\n— Quelle nouvelle, Caderousse ?\n")
    quotes = find_quotations(text)
    assert quotes[-1].speaker is None  # the only other speaker is the one spoken to


def test_guillemets_with_incise_inside_and_after():
    text = "« Soit, dit le major, organisez la fête. » Puis il rit. « Tu ne verras pas cela », dit-il.\n"
    first, second = find_quotations(text)
    assert spoken(text, first) == ["« Soit,", "organisez la fête. »"]
    assert first.speaker == "le major"
    assert spoken(text, second) == ["« Tu ne verras pas cela »"] and second.mention == "il"
    assert second.speaker == "le major"
    assert_offsets(text, [first, second])


def test_gutenberg_double_hyphen_replies():
    text = "-- Bonjour, mon père, dit Dantès.\n\n-- Bonjour, Edmond. Entre donc.\n"
    first, second = find_quotations(text)
    assert first.marker == "--" and spoken(text, first) == ["-- Bonjour, mon père,"]
    assert first.speaker == "Dantès"
    assert spoken(text, second) == ["-- Bonjour, Edmond. Entre donc."]


def test_multi_paragraph_guillemets_are_one_quotation():
    text = ("Il raconta :\n\n« Je partis le matin.\n\n« La mer était belle. Nous arrivâmes le soir. »\n\n"
            "Puis il se tut.\n")
    [q] = find_quotations(text)
    assert q.text.startswith("« Je partis") and q.text.endswith("le soir. »")
    assert_offsets(text, [q])


def test_a_story_told_in_guillemets_is_a_frame_and_its_speech_is_kept():
    text = ("— J'obéis.\n\n« Le jeune homme était le fils d'un notaire. Il partit pour Rome.\n\n"
            "« Là il rencontra un vieillard, qui lui dit : « Tu reviendras. » Il ne revint jamais.\n\n"
            "— Et ensuite ?\n")
    said = [q.speech(text) for q in find_quotations(text)]
    assert said == ["J'obéis.", "Tu reviendras.", "Et ensuite ?"]


def test_narration_after_the_incise_is_not_speech():
    text = ("— Je reviens, dit Pierre. Les chevaux attendaient dans la cour.\n\n"
            "— Je reviens, dit Pierre. Attendez-moi ici.\n")
    first, second = find_quotations(text)
    assert spoken(text, first) == ["— Je reviens,"]
    assert spoken(text, second) == ["— Je reviens,", "Attendez-moi ici."]


def test_terms_in_guillemets_are_not_speech():
    assert find_quotations("Il aimait les personnes « arrivées » et les livres « sérieux ».\n") == []


def test_paragraphs_of_a_hard_wrapped_crlf_text():
    text = "Il dit :\r\n\r\n-- Je viens, je\r\nviens, dit-il, avec\r\nplaisir.\r\n\r\n-- Bien.\r\n"
    assert len(paragraphs(text)) == 3
    first, second = find_quotations(text)
    assert first.speech(text).split() == "Je viens, je viens, avec plaisir.".split()
    assert first.mention == "il" and second.speech(text) == "Bien."
    assert_offsets(text, [first, second])


def test_gerund_with_a_pronoun_continues_the_incise():
    text = "— Et à quoi cela me servirait-il ; dit Pauline, et en se regardant au miroir d'un air sombre.\n"
    [q] = find_quotations(text)
    assert spoken(text, q) == ["— Et à quoi cela me servirait-il"]
    assert q.speaker == "Pauline"


def test_participle_describing_the_speaker_is_narration_and_an_exclamation_is_speech_again():
    text = ("— Eh bien ! dit la vieille femme en se levant, appuyée sur sa fille, qui est donc là ?\n\n"
            "— Ils sont pauvres ! s'écria le docteur, bondissant hors de son fauteuil, ils sont pauvres !\n")
    first, second = find_quotations(text)
    assert spoken(text, first) == ["— Eh bien !", "qui est donc là ?"]
    assert spoken(text, second) == ["— Ils sont pauvres !", "ils sont pauvres !"]


def test_an_adjective_and_its_complement_after_the_incise_describe_the_speaker():
    text = "— Laisse-moi ! cria Paul d'une voix sourde, pâle de colère.\n\n— Va, dit-elle, prête à pleurer.\n"
    first, second = find_quotations(text)
    assert spoken(text, first) == ["— Laisse-moi !"] and first.speaker == "Paul"
    assert spoken(text, second) == ["— Va,"]


def test_narration_with_a_named_subject_in_the_passe_simple_ends_the_reply():
    text = ("— Je viens ce soir. Marie, le nez dans son manteau, courut à la porte.\n\n"
            "— Dites-lui que je pars. Le valet sortit.\n")
    first, second = find_quotations(text)
    assert spoken(text, first) == ["— Je viens ce soir."]
    assert spoken(text, second) == ["— Dites-lui que je pars."]


def test_an_imperfect_statement_after_a_question_or_exclamation_is_narration_unless_a_comment():
    text = ("— Tu es venu seul ? Mais la maison était vide depuis longtemps.\n\n"
            "— Quelle soirée ! C'était superbe. Reviens demain.\n")
    first, second = find_quotations(text)
    assert spoken(text, first) == ["— Tu es venu seul ?"]
    assert second.text.endswith("Reviens demain.")


def test_an_inline_reply_gives_way_to_a_narrative_clause_after_a_comma():
    text = ("Au premier cri : — Au loup, chacun courut vers la bergerie. Le chien aboya.\n\n"
            "— Je pars demain. Tout fut prêt en une heure.\n")
    first, second = find_quotations(text)
    assert spoken(text, first) == ["— Au loup"]
    assert spoken(text, second) == ["— Je pars demain."]


def test_a_speaker_telling_a_story_in_the_passe_simple_keeps_the_floor():
    text = ("— Madame, le cardinal se rendit maître de la statue et la fit exécuter en marbre. "
            "C'est là qu'en 1791 la famille la retrouva, et pria Vien de la copier.\n")
    [q] = find_quotations(text)
    assert q.text.endswith("de la copier.")


def test_diary_entries_under_a_date_heading_are_written_not_spoken():
    text = ("Elle tenait son journal.\n\nMardi, 22 novembre.\n\n« William va mieux ; le commandant lui a "
            "répété : « Courage, Signora. » Nous avons prié. »\n\n« Le soir, nous avons chanté. »\n\n"
            "Le lendemain, il dit : « Je suis guéri. »\n")
    said = [q.speech(text) for q in find_quotations(text)]
    assert said == ["Courage, Signora.", "Je suis guéri."]


def test_one_closing_guillemet_ends_a_nested_and_its_outer_quotation():
    text = ("Il expliquait : « Quand Médor a vu le râle, il s'est dit : « Attends, mon gaillard. » "
            "Alors il s'est mis à quêter. Il s'est dit : « Pincé ! » et s'est tapi.\n\nOn rit.\n")
    said = [q.speech(text) for q in find_quotations(text)]
    assert said == ["Quand Médor a vu le râle, il s'est dit : « Attends, mon gaillard.",
                    "Attends, mon gaillard.", "Pincé !"]


def test_an_unclosed_guillemet_paragraph_that_turns_to_narration_is_a_told_story():
    text = ("— Zambinella !\n\n« Il entre et s'assied au parterre, près de la scène. La toile se leva.\n\n"
            "— Et alors ?\n\n« Bonjour, mon ami.\n\n— Bonjour.\n")
    said = [q.speech(text) for q in find_quotations(text)]
    assert said == ["Zambinella !", "Et alors ?", "Bonjour, mon ami.", "Bonjour."]


def test_a_run_of_remarks_closed_by_etc_is_crowd_chatter_not_speech():
    text = ("Au bal, on chuchotait :\n\n— Est-ce sa cousine ? — On dit qu'elle chante. — Qui l'a invitée ? etc.\n\n"
            "— J'ai pris du pain, dit Paul, du vin, etc.\n")
    [q] = find_quotations(text)  # one speaker's "etc." is his own
    assert spoken(text, q) == ["— J'ai pris du pain,", "du vin, etc."] and q.speaker == "Paul"


@pytest.mark.parametrize("before, speaker", [
    ("Il entendit sa maîtresse disant à voix basse :", "sa maîtresse"),
    ("Mon père agacé par mon insistance finit par répondre :", "Mon père"),
    ("Le vieux qui fumait sa pipe répondit :", "Le vieux"),
    ("Le soir, Paul vint. Ma mère lui a enfin répondu, devant Paul qui attendait :", "Ma mère"),
    ("Quand Jean entra, Marie s'est écriée :", "Marie"),
])
def test_subject_before_a_participle_complement_or_a_relative_clause(before, speaker):
    text = f"Nous marchions.\n\n{before}\n\n— Tais-toi donc.\n"
    [q] = find_quotations(text)
    assert (q.speaker, q.cue) == (speaker, "previous")


def test_mentions_character_ignores_case_accents_hyphens_and_apostrophes():
    name, aliases = DANTES
    for chunk in ["Le comte de Monte Cristo salua.", "DANTES rit.", "l’abbé Busoni entra",
                  "Edmond regarda la mer.", "Il vit le Comte."]:
        assert mentions_character(chunk, name, aliases), chunk
    for chunk in ["Danglars et Fernand burent.", "Dantesque", "Le comtesse"]:
        assert not mentions_character(chunk, name, aliases), chunk
    assert mentions_character("DANTES rit", "Dantès") and not mentions_character("Dantès", "Edmond Dantès")
    assert not mentions_character("anything", "")


def test_is_character_matches_names_and_exact_common_noun_aliases():
    name, aliases = DANTES
    assert normalise_speaker("l’Abbé  Monte-Cristo") == "l'abbe monte cristo"
    for speaker in ["M. Dantès", "le jeune Dantès", "le comte", "Le Comte", "Monte Cristo", "EDMOND"]:
        assert is_character(speaker, name, aliases), speaker
    for speaker in ["le comte de Morcerf", "Danglars", "l'abbé", None, ""]:
        assert not is_character(speaker, name, aliases), speaker


def test_character_quotes_keeps_only_the_characters_words():
    name, aliases = DANTES
    text = ("— Tu es heureux, dit Danglars.\n\n— Très heureux, répondit Dantès.\n\n"
            "« Je le sais », fit le comte.\n")
    said = [q.speech(text) for q in character_quotes(text, name, aliases)]
    assert said == ["Très heureux,", "Je le sais"]


def test_all_speakers_rows_are_json_with_file_offsets(tmp_path):
    path = tmp_path / "scene.txt"
    path.write_bytes("\ufeffIl dit :\r\n\r\n— Oui, répondit Mercédès.\r\n".encode("utf-8"))
    text = read_text(path)
    rows = all_speakers_rows(text)
    assert [r["speaker"] for r in rows] == ["Mercédès"]
    for row in rows:
        json.dumps(row, ensure_ascii=False)
        assert {"text", "speaker", "start", "end"} <= set(row)
        assert text[row["start"]:row["end"]] == row["text"]
    with open(path, encoding="utf-8", newline="") as fh:  # offsets are code points of the file itself
        assert fh.read()[rows[0]["start"]:rows[0]["end"]] == "— Oui,"


def test_read_text_errors_name_the_file(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("Dantès".encode("latin-1"))
    with pytest.raises(Exception, match="latin1.txt.*UTF-8"):
        read_text(bad)


def test_a_whole_book_is_read_to_its_end():
    """2.5 MB, a novel's length: every quotation found, to the last (no timing here: timings belong in bench/)."""
    scene = ("Dantès entra. Le vieillard se leva et dit : « Mon fils ! »\n\n— Mon père, dit Dantès, "
             "je reviens.\n\n— Tu as faim ?\n\n— Non, répondit-il. Asseyez-vous.\n\n"
             "Ils parlèrent longtemps de la mer et du navire, puis le père soupira.\n\n")
    book = scene * (2_500_000 // len(scene))
    quotes = find_quotations(book)
    assert len(quotes) == 4 * (2_500_000 // len(scene))
    assert quotes[-1].end > len(book) - len(scene)


def _bench():
    return load_bench("extract_quality")


@pytest.mark.skipif(not LITBANK.is_dir(), reason=f"shared data absent: {LITBANK}")
def test_fr_litbank_detection_beats_the_regex_and_attribution_holds():
    bench = _bench()
    overall = bench.summary(list(bench.evaluate(LITBANK).values()))
    assert overall["gold"] == 620
    assert overall["F1"] >= overall["base_F1"] + 0.13  # measured 0.964 vs 0.821 (overlap >= 50% of union)
    assert overall["any_F1"] >= overall["base_any_F1"]  # measured 0.970 vs 0.961 (any overlap)
    assert overall["F1"] >= 0.96                        # measured 0.964
    assert overall["strict_F1"] >= 0.925                # measured 0.933 (same words as the annotators')
    assert overall["acc"] >= 0.85                       # measured 0.866 on named-speaker quotations


def test_bench_errors_lists_false_positives_and_negatives_with_context(tmp_path):
    text = "Il dit : « Viens. »\n\n— Oui, dit-elle.\n\nLe chat « dormait ».\n"
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    start = text.index("— Oui")
    (tmp_path / "t.ann").write_text(f"T1\tCitation {start} {start + 5}\t— Oui\n"
                                    f"T2\tCitation 0 2\tIl\n", encoding="utf-8")
    rows = _bench().errors(tmp_path / "t.txt")
    assert [r.split()[0] for r in rows] == ["FN", "FP"]  # "Il" never spoken; « Viens. » not annotated
    assert "'« Viens. »'" in rows[1] and "before: 'Il dit : '" in rows[1]


@pytest.mark.skipif(not LITBANK.is_dir(), reason=f"shared data absent: {LITBANK}")
def test_fr_litbank_offsets_are_exact():
    for path in sorted(LITBANK.glob("*.txt"))[:3]:
        text = path.read_text(encoding="utf-8")
        assert_offsets(text, find_quotations(text))


@pytest.mark.skipif(not (SHARED / "gutenberg").is_dir(), reason=f"shared data absent: {SHARED / 'gutenberg'}")
def test_raw_gutenberg_and_clean_text_give_the_same_quotations():
    raw = read_text(SHARED / "gutenberg" / "morte_amoureuse.raw.txt")
    clean = read_text(SHARED / "gutenberg" / "morte_amoureuse.expected.txt")
    from_raw, from_clean = find_quotations(raw), find_quotations(clean)
    assert len(from_clean) >= 30
    assert [" ".join(q.speech(raw).split()) for q in from_raw] == \
        [" ".join(q.speech(clean).split()) for q in from_clean]
    assert [q.speaker for q in from_raw] == [q.speaker for q in from_clean]


@pytest.mark.parametrize("text, speaker", [
    # the latest feminine mention is a thing: the pronoun goes back to the woman
    ("Mercédès s'approcha de la fenêtre. Une lumière pâle éclairait la chambre. Elle murmura :\n\n"
     "— Il ne reviendra pas.\n", "Mercédès"),
    ("Le vieux Dantès posa sa pipe. Un long silence suivit. Il dit enfin :\n\n— Mon fils est perdu.\n",
     "Le vieux Dantès"),
    # a common noun for a person is a person
    ("La servante entra. La lampe fumait sur la table. Elle dit :\n\n— Monsieur est servi.\n", "La servante"),
])
def test_a_pronoun_stands_for_a_person_not_the_last_thing_named(text, speaker):
    [q] = find_quotations(text)
    assert q.speaker == speaker and q.mention.lower() in ("il", "elle")


def test_a_pronoun_with_no_person_before_it_has_no_speaker():
    text = "La lampe fumait. Une odeur de cire emplissait la chambre. Elle dit :\n\n— Entrez.\n"
    [q] = find_quotations(text)
    assert q.speaker is None and q.mention == "Elle"


def test_names_are_capitalised_words_not_sentence_openers():
    from dantes_mlx.fr.lexicon import names_in
    text = ("Ayant fini, Morrel sortit. Souvent il revenait avec Dantès. La mer était calme ; "
            "souvent la mer est calme, et ayant vu cela, on se tait. Faria parla.")
    names = names_in(text)
    assert {"Morrel", "Dantès", "Faria"} <= names  # Faria only opens a sentence, but is never lower case
    assert not {"Ayant", "Souvent", "La"} & names

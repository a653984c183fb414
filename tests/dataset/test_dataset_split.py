"""Dedupe, grouping and the group-aware / stratified split (in-memory and tmp files, no network)."""

from __future__ import annotations

import json
import math
import random
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dantes_mlx.config import PrepareConfig
from dantes_mlx.dataset.prepare import prepare
from dantes_mlx.dataset.split import (consecutive_runs, find_duplicates, group_ids, jaccard, near_duplicate_pairs,
                                      parse_split, shingles, split_groups, split_within_groups, strip_template)
from dantes_mlx.errors import ConfigError

FIXTURES = Path(__file__).parent.parent / "fixtures"


def read_split_rows(folder: Path) -> dict[str, list[dict]]:
    return {s: [json.loads(line) for line in (folder / f"{s}.jsonl").read_text(encoding="utf-8").splitlines()]
            for s in ("train", "valid", "test") if (folder / f"{s}.jsonl").exists()}


def test_parse_split():
    assert parse_split("80/10/10") == pytest.approx((0.8, 0.1, 0.1))
    assert parse_split("60/20/20") == pytest.approx((0.6, 0.2, 0.2))
    assert parse_split("90/10") == pytest.approx((0.9, 0.1, 0.0))
    for bad in ("80-10-10", "0/50/50", "a/b/c", "10/10/10/70"):
        with pytest.raises(ConfigError, match="invalid split"):
            parse_split(bad)


def test_exact_duplicates_ignore_case_punctuation_and_typography():
    texts = ["Qu’est-ce que la vengeance ?\nUn plat froid.", "qu'est ce que la vengeance\nUN PLAT FROID !",
             "Qu'est-ce que le pardon ?\nUne grâce."]
    drops = find_duplicates(texts, threshold=1.0)
    assert [(d.index, d.reason, d.kept) for d in drops] == [(1, "exact duplicate", 0)]


def test_near_duplicates_are_dropped_and_distinct_rows_kept():
    base = ("Mon cher ami, la patience est la vertu des prisonniers : au château d'If j'ai appris à compter "
            "les jours, à écouter la mer et à attendre l'heure de la justice sans jamais désespérer de Dieu.")
    near = base.replace("Mon cher ami", "Mon ami")
    other = "Marseille m'a vu naître, et c'est vers Marseille que mes pensées reviennent chaque soir."
    drops = find_duplicates([base, other, near], threshold=0.8)
    assert [(d.index, d.kept) for d in drops] == [(2, 0)] and drops[0].reason.startswith("near duplicate")
    assert find_duplicates([base, other], threshold=0.8) == []


def test_minhash_lsh_finds_the_pairs_brute_force_finds():
    rng = random.Random(3)
    vocab = [f"mot{i}" for i in range(60)]
    texts = [" ".join(rng.choice(vocab) for _ in range(30)) for _ in range(40)]
    texts += [t.replace(t.split()[5], "autre", 1) for t in texts[:10]]  # ten near copies
    sets = [shingles(t) for t in texts]
    brute = {(i, j) for i in range(len(sets)) for j in range(i + 1, len(sets)) if jaccard(sets[i], sets[j]) >= 0.7}
    found = {(i, j) for i, j, _ in near_duplicate_pairs(sets, 0.7)}
    assert found == brute and len(brute) >= 10


def test_group_ids_join_rows_sharing_any_key():
    keys = [["a", None], ["b", "x"], ["c", "x"], ["a", None], ["d", None]]
    assert group_ids(keys) == [0, 1, 1, 0, 2]


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 4), min_size=1, max_size=60), seed=st.integers(0, 10_000),
       split=st.sampled_from(["80/10/10", "60/20/20", "90/10", "34/33/33"]))
def test_a_source_id_never_lands_in_two_splits(sizes, seed, split):
    groups = [g for g, size in enumerate(sizes) for _ in range(size)]
    random.Random(seed).shuffle(groups)
    names = split_groups(groups, parse_split(split), seed)
    where = defaultdict(set)
    for group, name in zip(groups, names):
        where[group].add(name)
    assert all(len(s) == 1 for s in where.values())
    assert names == split_groups(groups, parse_split(split), seed)  # reproducible
    counts = Counter(names)
    for name, ratio in zip(("train", "valid", "test"), parse_split(split)):
        assert abs(counts[name] - ratio * len(groups)) < max(sizes) + 1
        assert ratio > 0 or counts[name] == 0


@settings(max_examples=80, deadline=None)
@given(counts=st.lists(st.integers(1, 30), min_size=1, max_size=20), seed=st.integers(0, 1000),
       split=st.sampled_from(["80/10/10", "60/20/20", "50/25/25", "40/60", "20/40/40"]))
def test_stratified_one_row_groups_keep_every_class_within_one_row(counts, seed, split):
    labels = [f"c{k}" for k, n in enumerate(counts) for _ in range(n)]
    ratios = parse_split(split)
    names = split_groups(list(range(len(labels))), ratios, seed, labels)
    for k, n in enumerate(counts):
        got = Counter(name for name, label in zip(names, labels) if label == f"c{k}")
        assert got["train"] >= 1  # a label never trained on cannot be learnt
        for name, ratio in zip(("train", "valid", "test"), ratios):
            assert abs(got[name] - ratio * n) < 1.0 or (name == "train" and got[name] == 1)
    sizes = Counter(names)  # many small labels: their rounding must not all go to train
    for name, ratio in zip(("train", "valid", "test"), ratios):
        assert abs(sizes[name] - ratio * len(labels)) < 2.0 + sum(n * ratios[0] < 1 for n in counts)


def test_many_rare_labels_still_fill_valid_and_test():
    """15 labels of 3 e-mails each at 80/10/10 used to give 45/0/0: every label's 0.3 row rounded away."""
    labels = [f"service{k}" for k in range(15) for _ in range(3)]
    names = split_groups(list(range(len(labels))), parse_split("80/10/10"), 0, labels)
    assert Counter(names) == Counter({"train": 36, "valid": 5, "test": 4})
    one_each = split_groups([0, 1, 2], parse_split("50/50"), 0, ["a", "b", "c"])
    assert one_each == ["train"] * 3  # never a label seen only in validation


def test_prepare_stratifies_the_email_routing_fixture_60_20_20(tmp_path):
    source = FIXTURES / "email_routing.jsonl"
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines()]
    report = prepare([source], tmp_path, PrepareConfig(split="60/20/20", system_prompt=False))
    assert report.stratified and not report.duplicates
    out = read_split_rows(tmp_path)
    totals = Counter(r["label"] for r in rows)
    assert len(totals) == 5
    for label, n in totals.items():
        for split, share in (("train", 0.6), ("valid", 0.2), ("test", 0.2)):
            got = sum(r["label"] == label for r in out[split])
            assert abs(got - share * n) < 1.0, (label, split, got, share * n)
    assert {r["source_id"] for r in out["train"]}.isdisjoint({r["source_id"] for r in out["test"]})
    assert all(set(r) == {"messages", "source_id", "label"} for r in out["train"])


def test_labels_are_inferred_from_short_completions(tmp_path):
    source = tmp_path / "mails.jsonl"
    rows = [json.loads(line) for line in (FIXTURES / "email_routing.jsonl").read_text("utf-8").splitlines()]
    source.write_text("".join(json.dumps({"prompt": r["prompt"], "completion": r["completion"]},
                                         ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    report = prepare([source], tmp_path / "out", PrepareConfig(split="60/20/20", format="completions"),
                     "Tu es Dantès.")
    assert report.stratified and sum(report.labels["valid"].values()) == report.counts["valid"]
    assert report.notes and "persona was not added" in report.notes[0]


def test_no_stratify_flag_is_honoured(tmp_path):
    report = prepare([FIXTURES / "email_routing.jsonl"], tmp_path, PrepareConfig(split="60/20/20", stratify=False))
    assert not report.stratified


def test_same_seed_same_split_other_seed_other_split(tmp_path):
    cfg = PrepareConfig(split="60/20/20")
    prepare([FIXTURES / "email_routing.jsonl"], tmp_path / "a", cfg)
    prepare([FIXTURES / "email_routing.jsonl"], tmp_path / "b", cfg)
    prepare([FIXTURES / "email_routing.jsonl"], tmp_path / "c", PrepareConfig(split="60/20/20", seed=1))
    assert read_split_rows(tmp_path / "a") == read_split_rows(tmp_path / "b")
    assert read_split_rows(tmp_path / "a") != read_split_rows(tmp_path / "c")


def test_group_key_keeps_rows_of_one_citation_together(tmp_path):
    source = tmp_path / "pairs.jsonl"
    rows = [{"instruction": f"Question {i} sur la citation {i % 7} : pourquoi {i * 13} ?",
             "response": f"Réponse numéro {i}, développée autour de l'idée {i * 7} et du thème {i % 7}.",
             "citation": f"Citation {i % 7}"} for i in range(60)]
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    prepare([source], tmp_path / "out", PrepareConfig(group_key="citation", near_dup_threshold=1.0))
    where = defaultdict(set)
    for split, out in read_split_rows(tmp_path / "out").items():
        for row in out:
            where[row["source_id"]].add(split)
            assert row["source_id"].startswith("citation=Citation ") and row["group"].startswith("g")
    assert len(where) == 7 and all(len(s) == 1 for s in where.values())


def test_consecutive_runs_on_three_topics():
    texts = ["Le château d'If et sa prison de pierre.", "La prison du château d'If, humide et noire.",
             "Pourquoi le château d'If vous hante-t-il ?",
             "Mercédès, la Catalane aux yeux noirs.", "Avez-vous revu Mercédès la Catalane ?",
             "Le trésor de l'île de Monte-Cristo.", "Combien valait le trésor de Monte-Cristo ?",
             "Où l'abbé Faria avait-il caché le trésor de l'île ?"] * 1
    filler = [f"Sujet sans rapport numéro {i} : {w}." for i, w in enumerate(
        "banque journal opéra duel poison Rome carnaval bandit Haydée Janina Villefort".split())]
    runs, threshold = consecutive_runs(texts + filler)
    assert runs[:8] == [0, 0, 0, 1, 1, 2, 2, 2] and threshold > 0


# Groups read by hand in dantes_conversations.jsonl (1-based line numbers): each block asks about one citation.
HAND_CHECKED = {
    "merlettes du blason de Monte-Cristo": (1, 2, 3),
    "goût des boissons": (29, 30, 31),
    "maison lugubre du baron": (56, 57, 58),
    "Othello et un abbé de Ganges (the third asks about its 'escalier sombre et orageux')": (104, 105, 106),
    "catégories de fortune (answers all open with 'Sans doute')": (247, 248, 249),
    "carreau cassé (the middle question shares no rare word)": (313, 314, 315),
}


def test_group_consecutive_on_dantes_conversations(shared_data, tmp_path):
    source = shared_data / "reference" / "dantes_conversations.jsonl"
    report = prepare([source], tmp_path, PrepareConfig(group_consecutive=True))
    print(f"groups found: {report.groups}; runs: {report.consecutive}")
    assert 1000 <= report.consecutive["runs"] <= 2000  # about three questions per citation over 4,091 rows
    # Source line of each output row, through its question (unique in the file).
    lines = [json.loads(raw)["conversations"][0]["value"].strip()
             for raw in source.read_text(encoding="utf-8").splitlines()]
    line_of = {q: n for n, q in enumerate(lines, 1)}
    assert len(line_of) == len(lines)
    line_split, line_group, group_splits = {}, {}, defaultdict(set)
    for split, rows in read_split_rows(tmp_path).items():
        for row in rows:
            n = line_of[next(m["content"] for m in row["messages"] if m["role"] == "user")]
            line_split[n], line_group[n] = split, row["group"]
            group_splits[row["group"]].add(split)
            group_splits[row["source_id"]].add(split)
    assert len(line_split) == 4091 - 2  # two rows with an empty turn are dropped (lines 2727, 3824)
    assert all(len(s) == 1 for s in group_splits.values())
    for topic, block in HAND_CHECKED.items():
        assert len({line_group[n] for n in block}) == 1, topic
        assert len({line_split[n] for n in block}) == 1, topic
    # Boundaries read by hand: the line before and after these blocks is about another citation.
    assert line_group[4] != line_group[3] and line_group[103] != line_group[104] != line_group[107]


@settings(max_examples=25, deadline=None)
@given(citations=st.lists(st.integers(1, 4), min_size=3, max_size=25), seed=st.integers(0, 100),
       split=st.sampled_from(["80/10/10", "60/20/20", "50/50"]), shuffle=st.booleans())
def test_prepare_never_puts_a_source_id_in_two_splits(citations, seed, split, shuffle):
    import tempfile

    from dantes_mlx.dataset.validate import validate_dir

    rows = [{"instruction": f"Question {k} sur la citation {c}, variante {c * 31 + k} ?",
             "response": f"Réponse {k} : la citation {c} parle du destin numéro {c * 17 + k * 5}.",
             "source_id": f"cit-{c}"} for c, n in enumerate(citations) for k in range(n)]
    if shuffle:  # rows of one citation need not be adjacent
        random.Random(seed).shuffle(rows)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "pairs.jsonl"
        source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        prepare([source], Path(tmp) / "out", PrepareConfig(split=split, seed=seed, near_dup_threshold=1.0))
        where = defaultdict(set)
        for name, out in read_split_rows(Path(tmp) / "out").items():
            for row in out:
                where[row["source_id"]].add(name)
        assert len(where) == len(citations) and all(len(s) == 1 for s in where.values())
        assert validate_dir(Path(tmp) / "out", near_threshold=1.0).errors == []


INSTRUCTION = ("Classe le texte suivant dans l'une de ces catégories : Achats, Comptabilité clients, Comptabilité "
               "fournisseurs, Direction commerciale, Formation, Informatique et téléphonie, Logistique, Marketing, "
               "Paie, Qualité, Recrutement, Ressources humaines, Service juridique, Sécurité. Réponds uniquement "
               "par le nom de la catégorie.\n\n")


def test_a_shared_instruction_does_not_make_different_emails_near_duplicates(tmp_path):
    """Short e-mails behind one long instruction (as `generate --labels` writes them) were dropped as
    near duplicates of each other, even with different labels: the instruction outweighed the e-mail."""
    words = "imprimante facture badge stylos devis salon livraison audit alarme salaire candidat serveur".split()
    rows = [{"prompt": f"{INSTRUCTION}{a} et {b}", "completion": label, "source_id": f"m{n}", "label": label}
            for n, (a, b) in enumerate((a, b) for a in words for b in words if a < b)
            for label in [("Achats", "Paie", "Qualité")[n % 3]]]
    rows.append(dict(rows[0], prompt=rows[0]["prompt"] + " !", source_id="again"))  # a true duplicate
    source = tmp_path / "labels.jsonl"
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    report = prepare([source], tmp_path / "out", PrepareConfig(system_prompt=False))
    assert [(d[0], d[2]) for d in report.duplicates] == [(f"{source}:{len(rows)}", f"{source}:1")]
    assert not report.validation.problems  # nor leaks across splits in validate


def test_a_fact_asked_several_ways_keeps_every_question():
    """Paraphrases sharing one long answer are the point of fact memorisation, not near duplicates."""
    answer = ("CAF : Caisse d'allocations familiales, l'organisme de la branche famille de la Sécurité sociale "
              "qui verse les prestations familiales, les aides au logement, le revenu de solidarité active et la "
              "prime d'activité aux foyers qui y ont droit selon leurs ressources et leur situation familiale.")
    questions = ["Que signifie CAF ?", "Qu'est-ce que CAF ?", "Pouvez-vous m'expliquer ce qu'est CAF ?"]
    assert find_duplicates(questions, 0.9, [answer] * 3) == []
    near = find_duplicates(questions + ["Que signifie CAF ?!"], 0.9, [answer] * 3 + [answer + " Voilà."])
    assert [(d.index, d.kept, d.reason.split(" (")[0]) for d in near] == [(3, 0, "near duplicate")]


def test_strip_template_needs_most_rows_and_keeps_whole_words():
    texts = [f"Classe ce texte.\n\nmessage numéro {n} à classer" for n in range(12)] + ["autre chose"]
    assert strip_template(texts)[:2] == ["0", "1"] and strip_template(texts)[-1] == "autre chose"
    assert strip_template(texts[:5]) == texts[:5]  # too few rows to tell a template from content
    thirds = [f"{('impression', 'imprimante', 'imprimer')[n % 3]} {n}" for n in range(12)]
    assert strip_template(thirds) == thirds  # no prefix shared by half of them
    cut = [f"Réponds vite : {n}" for n in range(12)] + ["Réponds", "Réponds vite"]
    assert strip_template(cut)[0] == "0" and strip_template(cut)[-2:] == ["Réponds", "Réponds vite"]


# ---------------------------------------------------------------- --split-by row (fact memorisation)

@settings(max_examples=80, deadline=None)
@given(sizes=st.lists(st.integers(1, 5), min_size=1, max_size=60), seed=st.integers(0, 10_000),
       split=st.sampled_from(["80/10/10", "60/20/20", "90/10", "34/33/33"]))
def test_split_by_row_keeps_every_group_in_train(sizes, seed, split):
    groups = [g for g, size in enumerate(sizes) for _ in range(size)]
    random.Random(seed).shuffle(groups)
    ratios = parse_split(split)
    names = split_within_groups(groups, ratios, seed)
    assert names == split_within_groups(groups, ratios, seed)  # reproducible
    trained = {g for g, name in zip(groups, names) if name == "train"}
    assert trained == set(groups)  # held-out rows are other wordings of trained facts
    assert all(name == "train" for g, name in zip(groups, names) if sizes[g] == 1)
    counts, spare = Counter(names), len(groups) - len(sizes)
    for name, ratio in zip(("valid", "test"), ratios[1:]):
        assert counts[name] <= ratio * len(groups) + 1  # never more than its share
        assert ratio > 0 or counts[name] == 0
    held = counts["valid"] + counts["test"]
    assert held >= min(spare, sum(math.floor(r * len(groups)) for r in ratios[1:]))  # filled as far as rows allow
    per_group = Counter(g for g, name in zip(groups, names) if name != "train")
    if max(per_group.values(), default=0) > 1:  # a second wording of a fact only once every fact gave one
        assert all(per_group[g] >= 1 for g, size in enumerate(sizes) if size > 1)


def test_split_by_row_on_facts_asked_three_ways():
    groups = [f for f in range(30) for _ in range(3)]
    names = split_within_groups(groups, parse_split("80/10/10"), 0)
    assert Counter(names) == Counter({"train": 72, "valid": 9, "test": 9})
    held = [g for g, name in zip(groups, names) if name != "train"]
    assert len(set(held)) == 18  # one other wording each of 18 facts, not three wordings of six
    labels = ["court" if f % 3 else "long" for f in groups]  # stratified: each label's rows split by its share
    strat = split_within_groups(groups, parse_split("60/20/20"), 0, labels)
    for label in ("court", "long"):
        got = Counter(name for name, lab in zip(strat, labels) if lab == label)
        n = labels.count(label)
        assert all(abs(got[s] - r * n) <= 1 for s, r in zip(("train", "valid", "test"), (0.6, 0.2, 0.2)))
    assert {g for g, name in zip(groups, strat) if name == "train"} == set(groups)


def fact_rows(n_facts: int = 20, k: int = 3) -> list[dict]:
    """Rows as `generate --facts` writes them: k wordings of a question per fact, one source_id per fact."""
    wordings = ["Que signifie {s} ?", "Que veut dire le sigle {s} ?", "Pouvez-vous m'expliquer ce qu'est {s} ?"]
    return [{"instruction": wordings[j].format(s=f"SIG{i}"), "source": "fact", "source_id": f"fact-{i}",
             "response": f"SIG{i} signifie Service Informatique Général numéro {i}, créé en {1900 + i * 3} à "
                         f"Marseille pour tenir les registres du port et de ses {i * 7 + 11} navires."}
            for i in range(n_facts) for j in range(k)]


def test_prepare_split_by_row_holds_out_other_wordings_and_validate_expects_it(tmp_path):
    from dantes_mlx.dataset.validate import validate_dir

    source = tmp_path / "facts.jsonl"
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in fact_rows()), encoding="utf-8")
    report = prepare([source], tmp_path / "ds", PrepareConfig(split_by="row", system_prompt=False))
    splits = read_split_rows(tmp_path / "ds")
    assert {s: len(r) for s, r in splits.items()} == {"train": 48, "valid": 6, "test": 6}
    trained = {r["source_id"] for r in splits["train"]}
    assert len(trained) == 20 and {r["source_id"] for r in splits["valid"] + splits["test"]} <= trained
    assert "split by row (memorisation)" in report.summary()
    assert not report.validation.problems, report.validation.summary()
    assert "split by row (memorisation): shared sources expected" in report.validation.summary()
    assert json.loads((tmp_path / "ds" / "prepare_report.json").read_text("utf-8"))["split_by"] == "row"
    standalone = validate_dir(tmp_path / "ds")  # reads the mode prepare recorded beside the splits
    assert not standalone.problems and "shared sources expected" in standalone.summary()
    # A row copied from train to test is still a leak, whatever the mode.
    test_file = tmp_path / "ds" / "test.jsonl"
    test_file.write_text(test_file.read_text("utf-8") + json.dumps(splits["train"][0], ensure_ascii=False) + "\n",
                         encoding="utf-8")
    copied = validate_dir(tmp_path / "ds")
    assert [p.message.split(" as ")[0] for p in copied.errors] == ["leak: same (question, answer)"]
    assert copied.errors[0].line == 7
    # Without the record, the same folder is a group split with leaks.
    (tmp_path / "ds" / "prepare_report.json").unlink()
    assert any("leak: source_id" in p.message for p in validate_dir(tmp_path / "ds").errors)


def test_split_by_group_stays_the_default_and_a_bad_mode_lists_the_choices(tmp_path):
    source = tmp_path / "facts.jsonl"
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in fact_rows()), encoding="utf-8")
    report = prepare([source], tmp_path / "ds", PrepareConfig(system_prompt=False))
    splits = read_split_rows(tmp_path / "ds")
    where = defaultdict(set)
    for split, rows in splits.items():
        for row in rows:
            where[row["source_id"]].add(split)
    assert all(len(s) == 1 for s in where.values()) and report.to_dict()["split_by"] == "group"
    with pytest.raises(ConfigError, match="split_by 'rows'") as err:
        prepare([source], tmp_path / "bad", PrepareConfig(split_by="rows"))
    assert "group, row" in str(err.value)
    singles = tmp_path / "singles.jsonl"
    singles.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in fact_rows(12, 1)), encoding="utf-8")
    alone = prepare([singles], tmp_path / "alone", PrepareConfig(split_by="row", system_prompt=False))
    assert alone.counts == {"train": 12, "valid": 0, "test": 0}
    assert any("no source has more than one row" in n for n in alone.notes)


def test_cli_split_by_row(tmp_path):
    from click.testing import CliRunner

    from dantes_mlx.cli import main

    source = tmp_path / "facts.jsonl"
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in fact_rows()), encoding="utf-8")
    result = CliRunner().invoke(main, ["prepare", str(source), "-o", str(tmp_path / "ds"), "--split-by", "row",
                                       "--tokenizer", "none", "--no-system"])
    assert result.exit_code == 0, result.output
    assert "wrote train 48, valid 6, test 6 rows" in result.output
    checked = CliRunner().invoke(main, ["validate", str(tmp_path / "ds"), "--tokenizer", "none"])
    assert checked.exit_code == 0 and "shared sources expected" in checked.output, checked.output

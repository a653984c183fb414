"""Speaker ranking: a reply's candidate speakers found by the rules, scored by a small logistic model fitted with numpy.

An incise names its reply's speaker ("dit Bouvard", "répondit-il"): the rules' cue stands. Otherwise the
rules take one cue, the subject of the narration just before the reply, and miss when that subject is
not a person ("Son premier cri avait été :"), when the speaker is an object or a complement, or when a
participle hides the subject ("Le même médecin, penché sur moi, me demandait :"). The ranker looks at
every noun phrase of the narration's last two sentences before the reply and weighs cues any reader of
French uses: a person, a name, a pronoun, the subject of a speech verb, close to the reply, before a
colon, not after a preposition or a verb (an object), named inside the reply (an addressee), the
previous speaker, and the rules' own pick. A conditional logit over each reply's candidates, fitted
with numpy on fr-litbank-dev (`python bench/extract_quality.py --fit`), shipped as
`resources/speaker_ranker.json`; the bench reports it leave-one-text-out beside the in-sample numbers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from dantes_mlx.fr.lexicon import (CLITICS, DETS, FUNCTION, SPEECH_FORMS, SPEECH_PARTICIPLES, SPEECH_PARTICIPLES_PAST,
                                   TITLES_F, TITLES_M, person_like)
from dantes_mlx.fr.mentions import Mention, is_verb_like, noun_phrase, subject_verb_pairs, tokens
from dantes_mlx.fr.narrator import is_first_person
from dantes_mlx.fr.text import fold_name

FEATURES = ("bias", "subject", "speech_subject", "speech_after", "person", "name", "pronoun", "same_para",
            "last_sentence", "colon", "near", "closest", "last_person", "in_reply", "prev_speaker", "after_prep",
            "after_verb", "rule_pick")
WEIGHTS_FILE = Path(__file__).parent.parent / "resources" / "speaker_ranker.json"
_PREPS = {"à", "au", "aux", "de", "d'", "du", "des", "par", "avec", "pour", "sur", "chez", "vers", "contre",
          "dans", "sous", "entre", "près"}
_OPENERS = DETS | TITLES_M | TITLES_F | {"il", "elle", "je", "j'", "l'", "celui-ci", "celle-ci", "quelqu'", "chacun",
                                         "chacune"}
_SPEECH = SPEECH_FORMS | SPEECH_PARTICIPLES | SPEECH_PARTICIPLES_PAST
_SENTENCE = re.compile(r"[^.!?…;]+[.!?…;]*")
_NEAR_SCALE = math.log1p(2000)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A noun phrase that may name a reply's speaker: where it was found and its feature vector."""
    mention: Mention
    where: str  # before (the narration before it in its paragraph), previous (the narrative paragraph before)
    features: tuple[float, ...]


def _speech_after(toks, j: int) -> bool:
    """A speech verb within a few words after a noun phrase ending at toks[j]: "le faucheur suivant me criait"."""
    for k in range(j, min(len(toks), j + 4)):
        low = toks[k][0].lower()
        if low in _SPEECH:
            return True
        if not toks[k][0][:1].isalpha() or low not in CLITICS and is_verb_like(toks[k][0]):
            return False
    return False


def _stretch_mentions(source: str, a: int, b: int, names) -> list[tuple[Mention, dict]]:
    """The noun phrases of the last two sentences of source[a:b] that may speak (persons: names, titles, nouns
    for people, pronouns; or subjects), with their grammatical features."""
    spans = [(m.start(), m.end()) for m in _SENTENCE.finditer(source, a, b) if re.search(r"\w", m.group())][-2:]
    if not spans:
        return []
    lo, last_start = spans[0][0], spans[-1][0]
    toks = tokens(source[lo:b], lo)
    subjects = {m.start: (m, speech) for m, speech in subject_verb_pairs(source, toks)}
    out, i = [], 0
    while i < len(toks):
        word = toks[i][0]
        low = word.lower()
        if not (word[:1].isupper() and re.split(r"[-'’]", low)[0] not in FUNCTION or low in _OPENERS):
            i += 1
            continue
        found = noun_phrase(toks, i, subject=True)
        if found is None:
            i += 1
            continue
        m, j = found
        m = subjects[m.start][0] if m.start in subjects else Mention(source[m.start:m.end], m.start, m.end, m.gender,
                                                                     m.pronoun)
        before = toks[i - 1][0].lower() if i > 0 else ""
        speech_after = _speech_after(toks, j)
        if m.start in subjects or speech_after or person_like(m, names):
            out.append((m, {"subject": m.start in subjects, "speech_subject": subjects.get(m.start, (m, False))[1],
                            "speech_after": speech_after, "last_sentence": m.start >= last_start,
                            "after_prep": before in _PREPS or low in ("du", "au", "aux"),
                            "after_verb": before.isalpha() and before not in CLITICS and is_verb_like(before)}))
        i = max(j, i + 1)
    return out


@lru_cache(maxsize=65536)
def bare_key(text: str) -> str:
    """A name without its determiners, normalised: "la vieille servante" -> "vieille servante"."""
    return " ".join(w for w in fold_name(text).split() if w not in DETS)


def _vector(**values: float) -> tuple[float, ...]:
    return tuple(float(values.get(name, 0.0)) for name in FEATURES)


def _narration_before(att, q, gap_start: int) -> tuple[int, int, str] | None:
    """The narration that may introduce q: before it in its paragraph, else the narrative paragraph before."""
    src, pi = att.source, att.para_of(q.start)
    pa = att.paras[pi][0]
    if src[max(pa, gap_start):q.start].strip(" \t\u00a0\r\n«—–-"):
        return max(pa, gap_start), q.start, "before"
    if pi > 0 and gap_start <= att.paras[pi - 1][0]:
        return (*att.paras[pi - 1], "previous")
    return None


def _is_previous(att, m: Mention, prev_key: str | None) -> bool:
    """Whether m is (or, a pronoun, stands for) the speaker of the reply just before."""
    if not prev_key:
        return False
    if m.pronoun and not is_first_person(m.text):
        antecedent = att.resolve(m, None)
        return antecedent is not None and bare_key(antecedent.text) == prev_key
    return bare_key(m.text) == prev_key


def candidates(att, q, gap_start: int, rule_mention: Mention | None, prev_speaker: Mention | None) -> list[Candidate]:
    """The candidate speakers of quotation q (no incise names its speaker) with their features. `att` is the
    running attributor (source, paragraphs, names, pronoun resolution, whether a "je" hands a reply over),
    `rule_mention` what the rules' cue chose, `prev_speaker` the speaker of the reply right before q."""
    stretch = _narration_before(att, q, gap_start)
    if stretch is None:
        return []
    src, (a, b, where) = att.source, stretch
    colon = src[a:b].rstrip(" \t\u00a0\r\n«—–-").endswith(":")
    # the narration's "je" speaks when the rules hand the reply to it, or as the subject of a speech verb
    picked = rule_mention.start if rule_mention is not None else None
    found = [(m, values) for m, values in _stretch_mentions(src, a, b, att.names)
             if not is_first_person(m.text) or (m.start == picked or values["speech_subject"] or values["speech_after"])
             and att.introduces(m, q.start)]
    said = f" {fold_name(src[q.start:q.end])} "
    prev_key = bare_key(prev_speaker.text) if prev_speaker is not None and prev_speaker.text else None
    persons = [person_like(m, att.names) for m, _ in found]
    last_person = max((k for k, is_person in enumerate(persons) if is_person), default=-1)
    out = []
    for k, (m, values) in enumerate(found):
        bare = bare_key(m.text)
        values.update(bias=1, colon=colon and values["last_sentence"], same_para=where == "before",
                      near=1 - min(1.0, math.log1p(q.start - m.end) / _NEAR_SCALE),
                      person=persons[k] and not m.pronoun, pronoun=m.pronoun,
                      name=any(w[:1].isupper() and w in att.names for w in m.text.split()),
                      closest=k == len(found) - 1, last_person=k == last_person,
                      in_reply=not m.pronoun and len(bare) > 2 and f" {bare} " in said,
                      prev_speaker=_is_previous(att, m, prev_key),
                      rule_pick=rule_mention is not None and rule_mention.start == m.start)
        out.append(Candidate(m, where, _vector(**values)))
    return out


@dataclasses.dataclass(frozen=True)
class Ranker:
    """A log-linear model over candidate features; a reply gets its best candidate when its share reaches `threshold`
    (0: always the best), else the rules' cue."""
    weights: tuple[float, ...]
    threshold: float = 0.0
    features: tuple[str, ...] = FEATURES

    def scores(self, cands: list[Candidate]) -> list[float]:
        """Probability that each candidate names the speaker, given that one of them does (a softmax; plain
        Python: a reply has a handful of candidates, numpy's call overhead would dominate)."""
        z = [sum(w * x for w, x in zip(self.weights, c.features)) for c in cands]
        top = max(z, default=0.0)
        e = [math.exp(v - top) for v in z]
        return [v / sum(e) for v in e]

    def choose(self, cands: list[Candidate]) -> Candidate | None:
        """The best candidate, or None when none reaches the threshold."""
        scores = self.scores(cands)
        if not scores:
            return None
        best = max(range(len(scores)), key=scores.__getitem__)
        return cands[best] if scores[best] >= self.threshold else None

    def to_json(self, **meta) -> str:
        """The weights by feature name, with whatever provenance `meta` gives."""
        return json.dumps({"features": dict(zip(self.features, self.weights)), "threshold": self.threshold, **meta},
                          ensure_ascii=False, indent=1)


def fit(groups: list[tuple[np.ndarray, np.ndarray]], l2: float = 1.0, iterations: int = 50) -> Ranker:
    """A conditional logit (softmax over each reply's candidates) by Newton's method, L2-regularised.

    `groups`: one (features, labels) pair per reply; replies without a right candidate teach nothing and
    are skipped. The bias cancels out of a softmax and stays 0."""
    groups = [(x, y / y.sum()) for x, y in groups if len(y) and y.sum() > 0]
    w = np.zeros(len(FEATURES))
    for _ in range(iterations):
        grad, hess = l2 * w, l2 * np.eye(len(FEATURES))
        for x, target in groups:
            z = x @ w
            p = np.exp(z - z.max())
            p /= p.sum()
            mean = p @ x
            grad += mean - target @ x
            hess += (x * p[:, None]).T @ x - np.outer(mean, mean)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return Ranker(tuple(float(v) for v in w))


def load_ranker(path: str | Path = WEIGHTS_FILE) -> Ranker:
    """A ranker from its JSON file (feature names must be the ones this module computes)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    names = tuple(data["features"])
    if names != FEATURES:
        raise ValueError(f"{path}: features {names} differ from this version's {FEATURES}; refit with "
                         "`python bench/extract_quality.py --fit`")
    return Ranker(tuple(float(data["features"][n]) for n in FEATURES), float(data.get("threshold", 0.5)))


_LAST_WORD = re.compile(r"([^\W\d_]+)\s*:\s*$")


def _plain_introduction(att, q, rule_mention: Mention | None) -> bool:
    """"Le vieillard se leva et dit :": a person the rules found, then a speech verb right before the colon
    that opens the reply in the same paragraph. Nothing for the ranker to weigh (and whole books stay fast)."""
    if rule_mention is None or rule_mention.pronoun or att.para_of(rule_mention.start) != att.para_of(q.start):
        return False
    m = _LAST_WORD.search(att.source, rule_mention.end, q.start)
    return m is not None and m.group(1).lower() in _SPEECH and person_like(rule_mention, att.names)


def ranker_chooser(ranker: Ranker | None, trace: list | None = None):
    """The `chooser` speakers.attribute takes: the ranker's best candidate (or no speaker when none
    scores enough); no ranker keeps the rules' cue. `trace` collects (quotation, candidates) for fitting."""
    def choose(att, q, gap_start, rule_mention, prev_speaker):
        if ranker is not None and trace is None and _plain_introduction(att, q, rule_mention):
            return None
        cands = candidates(att, q, gap_start, rule_mention, prev_speaker)
        if trace is not None:
            trace.append((q, cands))
        if ranker is None or not cands:
            return None
        best = ranker.choose(cands)
        return (best.where, best.mention) if best is not None else None
    return choose


@lru_cache(maxsize=1)
def default_ranker() -> Ranker | None:
    """The shipped ranker, or None when its file is absent (the rules alone then)."""
    return load_ranker() if WEIGHTS_FILE.is_file() else None

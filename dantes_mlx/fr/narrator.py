"""First-person narrators: the replies and thoughts of the narration's "je", and texts told in the first person.

A quotation is the narrator's when the narration itself says "je" speaks or thinks it: an inverted
incise ("répondis-je", "m'écriai-je", "me dis-je"), or, just before it, "je" as the subject of a verb
of speech or thought ("je lui dis :", "je me disais :", "je lui aurais dit :"), or of any other verb
when a colon hands over to the quotation ("je l'embrassai au front :"), except verbs of perceiving
("j'entendis :", "je lus :") and "faire" doing something. A "je" inside a reply is its speaker
speaking of themselves, never the narrator.
"""

from __future__ import annotations

import re

from dantes_mlx.fr.lexicon import ADVERBS, CLITICS, SPEECH_FORMS, SPEECH_PARTICIPLES_PAST, TOKEN, er_forms

FIRST_PERSON = frozenset({"je", "j'"})
# verbs of thought: what the narrator "pense", "songe", "se dit" or "se demande" is a thought, not speech
THOUGHT_FORMS = frozenset(f for stem in ("pens", "song", "rêv", "médit", "imagin") for f in er_forms(stem)) | {
    "réfléchis", "réfléchissais", "pensé", "songé", "rêvé", "médité", "imaginé", "réfléchi"}
_REFLEXIVE_THOUGHT = frozenset(er_forms("demand")) | {"dis", "disais", "dit", "demandé"}  # "je me disais"
_FIRST_AUXILIARIES = {"ai", "avais", "aurais", "aurai", "eus", "eusse"}
_FAIRE = {"fis", "fit", "faisais", "fait"}  # "fis-je" is speech, "je fis sauter le fermoir" is not
_PERCEIVES = {"entendis", "entendais", "entendu", "lus", "lisais", "lu", "vis", "voyais", "vu", "aperçus",
              "aperçu", "reconnus", "reconnu", "écoutai", "écoutais", "écouté", "déchiffrai", "trouvai"}
_OBJECT_CLITICS = (CLITICS - {"se", "s'"}) | {"ne", "n'"}
_INVERTED_JE = re.compile(r"([^\W\d_]+)-(?:t-)?$")


def is_first_person(word: str | None) -> bool:
    """Whether a mention is the first-person subject pronoun ("je", "j'", "J’")."""
    return bool(word) and word.strip().lower().replace("’", "'") in FIRST_PERSON


def first_person_kind(source: str, start: int, end: int, until: int | None = None) -> str | None:
    """For a "je" at source[start:end] in an incise or in the narration that ends at `until` before a
    quotation: "parole" when it is the subject of a verb of speech, "pensée" for a verb of thought,
    None when the words are not the narrator's. An inverted "-je" always introduces words. When a
    colon hands over to the quotation, any other verb too ("je l'embrassai au front :"), except one of
    perceiving ("j'entendis :": someone else speaks; "je lus :": a text), "faire" doing something ("Je fis
    sauter le fermoir…"), or a speech verb after it ("je me laissais distancer et le faucheur me criait :")."""
    inverted = _INVERTED_JE.search(source, max(0, start - 40), start)
    if inverted:
        before = source[max(0, inverted.start() - 4):inverted.start()].replace("’", "'").lower().split()
        return _kind(inverted.group(1).lower(), bool(before) and before[-1] in ("me", "m'")) or "parole"
    verb, reflexive, rest = _verb_after(source, end, until)
    if verb is None or verb in _PERCEIVES or verb in _FAIRE and rest[:1] and rest[0][:1].isalpha():
        return None
    kind = _kind(verb, reflexive)
    if kind or until is None or not source[end:until].rstrip(" \t\u00a0\r\n«—–-").endswith(":"):
        return kind
    return None if any(_kind(w, False) for w in rest) else "parole"


def _verb_after(source: str, end: int, until: int | None) -> tuple[str | None, bool, list[str]]:
    """(verb, reflexive, the words after it up to `until`) after a preverbal "je": clitics, "ne",
    adverbs and an auxiliary skipped."""
    stop = until if until is not None and until > end else min(len(source), end + 120)
    toks = [m.group().lower().replace("’", "'") for m in TOKEN.finditer(source, end, stop)]
    k, reflexive = 0, False
    while k < len(toks) and (toks[k] in _OBJECT_CLITICS or toks[k] in ADVERBS or toks[k] in ("pas", "point")):
        reflexive = reflexive or toks[k] in ("me", "m'")
        k += 1
    if k + 1 < len(toks) and toks[k] in _FIRST_AUXILIARIES:
        k += 1
        while k < len(toks) and toks[k] in ADVERBS:
            k += 1
    if k >= len(toks) or not toks[k][:1].isalpha():
        return None, reflexive, []
    return toks[k], reflexive, toks[k + 1:]


def _kind(verb: str, reflexive: bool) -> str | None:
    if verb in THOUGHT_FORMS or reflexive and verb in _REFLEXIVE_THOUGHT:
        return "pensée"
    if verb in SPEECH_FORMS or verb in SPEECH_PARTICIPLES_PAST:
        return "parole"
    return None


_FIRST = re.compile(r"(?<![\w'’])(?:je\b|j['’])", re.I)
_THIRD = re.compile(r"(?<![\w'’])(?:il|elle|ils|elles)\b", re.I)


def narration_spans(text: str, quotes) -> list[tuple[int, int]]:
    """The stretches of text outside the quotations, the incises inside them included."""
    spans, pos = [], 0
    for q in sorted(quotes, key=lambda q: q.start):
        if q.start > pos:
            spans.append((pos, q.start))
        spans.extend((a, b) for a, b in q.incises if pos <= a and b <= q.end)
        pos = max(pos, q.end)
    if pos < len(text):
        spans.append((pos, len(text)))
    return spans


def first_person_offsets(text: str, spans) -> list[int]:
    """Where these stretches of narration say "je" (offsets of each "je"/"j'")."""
    return [m.start() for a, b in spans for m in _FIRST.finditer(text, a, b)]


def first_person_share(text: str, quotes) -> tuple[float, int]:
    """(share of "je" among the narration's subject pronouns je/il/elle/ils/elles, count of "je")."""
    first = third = 0
    for a, b in narration_spans(text, quotes):
        first += sum(1 for _ in _FIRST.finditer(text, a, b))
        third += sum(1 for _ in _THIRD.finditer(text, a, b))
    return (first / (first + third) if first + third else 0.0), first


# fr-litbank-dev: La morte amoureuse 0.68, De la ville au moulin 0.53, a diary (elisabeth_Seton) 0.38; third-person
# novels with a framing "je" (Sarrasine 0.14, Mademoiselle Fifi 0.12) and the others 0.00-0.03
FIRST_PERSON_SHARE = 0.3
FIRST_PERSON_MIN = 20


def narrator_hint(text: str, quotes, name: str, speaks: bool) -> str | None:
    """A warning suggesting --narrator when the narration is in the first person and the rules never
    find the character speaking; None otherwise."""
    share, count = first_person_share(text, quotes)
    if speaks or share < FIRST_PERSON_SHARE or count < FIRST_PERSON_MIN:
        return None
    return (f"the narration says \"je\" {count} times ({share:.0%} of its subject pronouns) and the rules never "
            f"find {name} speaking: if {name} is the narrator, pass --narrator (character.narrator: true)")


def quote_kind(source: str, q) -> str:
    """extract's `kind` of a quotation: "pensée" when the narration's "je" thinks it ("je me disais :",
    "pensai-je"), else "parole"."""
    if is_first_person(q.speaker) and q.cue in ("incise", "before", "previous") and q.speaker_start is not None:
        return first_person_kind(source, q.speaker_start, q.speaker_end, q.start) or "parole"
    return "parole"

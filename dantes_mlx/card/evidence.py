"""Grounding a card: every piece of evidence names a citation the call saw, and its quote is found in that citation."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from dantes_mlx.card.schema import MAX_EVIDENCE, TRAIT_LISTS, empty_card, set_traits, traits_at
from dantes_mlx.extract.grounding import fold_for_matching, locate


@dataclass(frozen=True)
class Citation:
    """One input citation: the short id the LLM sees (c12), the id it has in its file, its words and context."""
    key: str
    source_id: str
    text: str
    contexte: str = ""


def ground_card(card: dict, citations: dict[str, Citation], allowed: set[str], min_grounding: float,
                where: dict) -> tuple[dict, list[dict], Counter]:
    """The card with only grounded evidence, the rejects (with `where` and a reason) and the counts.

    Evidence is kept when its id is one of `allowed` (what the call was shown) and its quote, if any, is found
    in that citation with at least `min_grounding` (the quote then becomes the citation's own words). A trait
    left without evidence is dropped; traits repeated in one list are merged."""
    grounded, rejects, counts = empty_card(), [], Counter()
    grounded["summary"] = card.get("summary", "")
    for path in TRAIT_LISTS:
        kept: dict[str, dict] = {}
        for trait in traits_at(card, path):
            evidence, bad = _evidence(trait, citations, allowed, min_grounding)
            rejects += [{**where, "list": "/".join(path), "trait": trait["trait"], **b} for b in bad]
            counts.update(b["reason"] for b in bad)
            if not evidence:
                rejects.append({**where, "list": "/".join(path), "trait": trait["trait"], "reason": "unsupported_trait"})
                counts["unsupported_trait"] += 1
                continue
            _merge(kept, trait["trait"], evidence)
        set_traits(grounded, path, list(kept.values()))
        counts["traits_kept"] += len(kept)
        counts["evidence_kept"] += sum(len(t["evidence"]) for t in kept.values())
    return grounded, rejects, counts


def _evidence(trait: dict, citations: dict[str, Citation], allowed: set[str],
              min_grounding: float) -> tuple[list[dict], list[dict]]:
    """(kept evidence, rejects) of one trait."""
    kept, bad, seen = [], [], set()
    for item in trait["evidence"]:
        key, quote = item["id"], item["quote"]
        if key not in allowed or key not in citations:
            bad.append({"reason": "unknown_id", "id": key, "quote": quote})
            continue
        if key in seen:
            continue
        if quote:
            text = citations[key].text
            found = locate(quote, text)
            if found.score < min_grounding:
                bad.append({"reason": "quote_not_found", "id": key, "quote": quote, "score": round(found.score, 1)})
                continue
            quote = text[found.start:found.end].strip()
        seen.add(key)
        kept.append({"id": key, "quote": quote})
    return kept, bad


def _merge(kept: dict[str, dict], text: str, evidence: list[dict]) -> None:
    """Add a trait to a list, joining the evidence of a trait already there with the same words."""
    norm = fold_for_matching(text)
    if norm not in kept:
        kept[norm] = {"trait": text, "evidence": evidence[:MAX_EVIDENCE]}
        return
    have = kept[norm]["evidence"]
    have += [e for e in evidence if e["id"] not in {h["id"] for h in have}]
    del have[MAX_EVIDENCE:]


def evidence_ids(card: dict) -> set[str]:
    """Every citation id a card's evidence names."""
    return {e["id"] for path in TRAIT_LISTS for t in traits_at(card, path) for e in t["evidence"]}


def trait_count(card: dict) -> int:
    return sum(len(traits_at(card, path)) for path in TRAIT_LISTS)

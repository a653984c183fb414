"""card.md: the card as a page to read, every trait with the citations that support it."""

from __future__ import annotations

from dantes_mlx.card.schema import HEADINGS, traits_at

LABELS = {
    "fr": {"title": "Fiche de personnage", "identity": "Identité", "psychology": "Psychologie",
           "verbal_style": "Style verbal", "register": "Registre", "syntax": "Syntaxe", "figures": "Figures",
           "lexicon": "Lexique", "rhythm": "Rythme", "behaviour": "Comportement en conversation",
           "provocation": "Face à une provocation", "moral_question": "Face à une question morale",
           "attack": "Face à une attaque", "praise": "Face à un éloge", "themes": "Thèmes récurrents",
           "persona": "Persona (message système)", "none": "(rien de fondé)", "source": "Source",
           "no_persona": "(aucun persona : la fiche n'a aucun trait fondé, ou l'appel n'a rien donné d'utilisable)"},
    "en": {"title": "Character card", "identity": "Identity", "psychology": "Psychology",
           "verbal_style": "Verbal style", "register": "Register", "syntax": "Syntax", "figures": "Figures",
           "lexicon": "Lexicon", "rhythm": "Rhythm", "behaviour": "Conversational behaviour",
           "provocation": "When provoked", "moral_question": "Faced with a moral question",
           "attack": "When attacked", "praise": "When praised", "themes": "Recurring themes",
           "persona": "Persona (system prompt)", "none": "(nothing grounded)", "source": "Source",
           "no_persona": "(no persona: the card has no grounded trait, or the call gave nothing usable)"},
}


def render_markdown(card: dict) -> str:
    """The card.json of a run as Markdown, headings in the character's language (English when not French)."""
    label = LABELS.get(card.get("language", ""), LABELS["en"])
    out = [f"# {label['title']} : {card['character']}" if card.get("language") == "fr"
           else f"# {label['title']}: {card['character']}", ""]
    if card.get("summary"):
        out += [f"> {card['summary']}", ""]
    for heading, subs in HEADINGS.items():
        out += [f"## {label[heading]}", ""]
        for sub in subs or (None,):
            if sub:
                out += [f"### {label[sub]}", ""]
            out += _traits(traits_at(card, (heading, sub) if sub else (heading,)), label) + [""]
    out += [f"## {label['persona']}", "", card.get("persona") or label["no_persona"], ""]
    out += [f"{label['source']} : {_source(card)}" if card.get("language") == "fr" else
            f"{label['source']}: {_source(card)}", ""]
    return "\n".join(out)


def _traits(traits: list[dict], label: dict) -> list[str]:
    if not traits:
        return [f"- {label['none']}"]
    lines = []
    for trait in traits:
        lines.append(f"- {trait['trait']}")
        for e in trait["evidence"]:
            words = e.get("quote") or e.get("citation", "")
            shown = words if len(words) <= 160 else words[:159].rstrip() + "…"
            lines.append(f"  - `{e['id']}` « {shown} »")
    return lines


def _source(card: dict) -> str:
    p = card.get("provenance", {})
    return (f"{p.get('citations', '?')} citations, {p.get('blocks', '?')} blocks, model {p.get('model', '?')}, "
            f"prompts {', '.join(p.get('prompt_versions', {}).values())}")

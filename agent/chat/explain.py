"""How a turn explains itself: what the message was read as, and reasons that say "mentioned", not "watched".

Every parse is said back ("Understood: Comedy, 1990 or later, without Star Wars."), so a misreading is
visible at once and the user can correct it. Titles are named as a sentence names them ("The
Terminator", not the catalogue's "Terminator, The").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from reasonrec.agent.chat.dialogue import DialogueAct
from reasonrec.agent.chat.language import language_name
from reasonrec.agent.chat.state import ChatConstraints, describe_constraints
from reasonrec.agent.chat.titles import ItemRef
from reasonrec.agent.schemas import Recommendations
from reasonrec.text import front_article

EXAMPLE = "a funny sci-fi from the 80s"
_SHOWN_TITLES = 3  # titles named in the reply text; the rest are in `recommendations`


def format_years(lo: int | None, hi: int | None) -> str | None:
    """'1990 or later', '1989 or earlier', 'the 1980s', '1994', '1990 to 1995'; None without bounds."""
    if lo is not None and hi is not None:
        if lo == hi:
            return str(lo)
        return f"the {lo}s" if lo % 10 == 0 and hi == lo + 9 else f"{lo} to {hi}"
    if lo is not None:
        return f"{lo} or later"
    return f"{hi} or earlier" if hi is not None else None


@dataclass
class Understood:
    """What a turn did with a message, in the order the explanation names it."""

    liked: list[ItemRef] = field(default_factory=list)  # titles the user mentioned liking
    disliked: list[ItemRef] = field(default_factory=list)
    fuzzy: dict[str, str] = field(default_factory=dict)  # natural title -> the phrase it was read from
    rejected: list[ItemRef] = field(default_factory=list)  # items of the last list dropped
    liked_shown: list[ItemRef] = field(default_factory=list)  # items of the last list liked
    relative_note: str | None = None  # "after 1994, the middle of the last list"
    asking: bool = False  # a title needs a clarifying question: the question says what was caught


def explain(act: DialogueAct, c: ChatConstraints, done: Understood) -> str:
    """One sentence saying how the message was read, e.g. "Understood: Comedy, 1990 or later, without Star Wars."

    Args:
        act: the parsed message.
        c: the session's constraints after the message was applied (years as resolved).
        done: the titles and items the message resolved to.
    """
    parts = _genre_parts(act)
    years = format_years(c.year_min, c.year_max)
    if act.relative and years:
        parts.append(f"{act.relative}: {years}" + (f" ({done.relative_note})" if done.relative_note else ""))
    elif act.years_given and years:
        parts.append(years)
    elif act.clear_years:
        parts.append("any year")
    parts += [_named("more like", r, done.fuzzy) for r in done.liked]
    parts += [_named("without", r, done.fuzzy) for r in done.disliked]
    parts += [f"not {front_article(r.title)}" for r in done.rejected]
    parts += [f"more like {front_article(r.title)}" for r in done.liked_shown]
    if act.k is not None:
        parts.append(f"{act.k} {'title' if act.k == 1 else 'titles'}")
    elif act.k_change:
        parts.append(f"a {act.k_change} list ({c.k})")
    if act.query:
        parts.append(f'"{act.query}" as the description')
    if act.age is not None:
        parts.append(f"{act.age} as an age, not a list length")
    if act.reset:
        parts.insert(0, "starting over")
    if act.more and not parts:
        parts.append("more of the same")
    notes = [f"The catalogue has no {u}, so I cannot filter by it." for u in act.unsupported]
    if act.language is not None:
        return " ".join([_foreign(act.language, parts), *notes])
    if not parts:
        caught = (
            [] if done.asking else ["I did not catch a genre, year, title or critique there, so the constraints stay."]
        )
        return " ".join([*caught, *notes])
    return " ".join([f"Understood: {', '.join(parts)}.", *notes])


def _genre_parts(act: DialogueAct) -> list[str]:
    parts = []
    if act.genres:
        guessed = {g: w for w, g in act.guessed_genres.items()}
        names = [f"{g} (a guess from '{guessed[g]}')" if g in guessed else g for g in act.genres]
        parts.append(("also " if act.additive else "") + " and ".join(names))
    if act.excluded_genres:
        parts.append("without " + " or ".join(act.excluded_genres))
    return parts


def _named(lead: str, ref: ItemRef, fuzzy: dict[str, str]) -> str:
    label = ref.natural_label()
    phrase = fuzzy.get(label)
    return f"{lead} {label}" + (f" (for '{phrase}')" if phrase else "")


def _foreign(language: str, parts: Sequence[str]) -> str:
    head = f"Your message looks {language_name(language)}; I understand English best."
    if parts:
        return f"{head} From it I read: {', '.join(parts)}."
    return f"{head} I could not read a genre, year or title in it, so the constraints stay. Try e.g. '{EXAMPLE}'."


def clarifying_question(phrase: str, options: Sequence[ItemRef]) -> str:
    """The question for an ambiguous or unconfirmed title (natural titles, numbered)."""
    if len(options) == 1:
        return (
            f"Did you mean {options[0].natural_label()} for {phrase!r}? The catalogue has no exact match. "
            "Answer yes, or name the title."
        )
    listed = "; ".join(f"{n}. {o.natural_label()}" for n, o in enumerate(options, 1))
    return f"Which {phrase!r} do you mean? {listed}. Answer with a number, a year or the title."


_WATCHED = r"(?:watched|saw|have watched|'ve watched|have seen|'ve seen|rated highly|rated)"


def mentioned_not_watched(reason: str, mentioned: Sequence[str]) -> str:
    """'Shares sci-fi with Star Wars, which you watched' -> '..., which you mentioned' for a title the
    user only mentioned in the chat (it joined the history, but they never said they watched it)."""
    for title in mentioned:
        t = re.escape(title)
        reason = re.sub(rf"({t}[^.;]*?), which you {_WATCHED}", r"\1, which you mentioned", reason)
        reason = re.sub(rf"\byou {_WATCHED} ({t})", r"you mentioned \1", reason)
    return reason


def list_reply(
    stated: ChatConstraints,
    applied: ChatConstraints,
    recs: Recommendations,
    domain: str,
    relaxed: Sequence[str] = (),
    shortfall: bool = False,
    repeats: bool = False,
) -> str:
    """'Here are 5 Comedy movies from the 1980s: A (1985), B (1982), C (1984) and 2 more.' plus what changed.

    A list shorter than asked always says why: too few unseen items match (`shortfall`), or (rarely)
    the ranker kept fewer than the candidates it was given.
    """
    n = len(recs.items)
    titles = [ItemRef(item_id=r.item_id, title=r.title, year=r.year).natural_label() for r in recs.items]
    listed = ", ".join(titles[:_SHOWN_TITLES]) + (f" and {n - _SHOWN_TITLES} more" if n > _SHOWN_TITLES else "")
    what = describe_constraints(applied, domain, plural=n != 1)
    parts = []
    if relaxed:
        parts.append(
            f"Nothing unseen matched {describe_constraints(stated, domain)}, so I dropped {' and '.join(relaxed)}."
        )
    if shortfall:
        parts.append(f"Only {n} unseen {what} {'matches' if n == 1 else 'match'}.")
    elif n < stated.k:
        parts.append(f"The ranker kept {n} of the {stated.k} asked; the others did not survive its checks.")
    if repeats:
        parts.append("Some earlier suggestions are back, as few new ones match.")
    parts.append(f"Here {'is' if n == 1 else 'are'} {n} {what}: {listed}.")
    return " ".join(parts)


def mark_note(ref: ItemRef, polarity: str) -> str:
    """'Noted that you like The Terminator (1984).' / 'Dropped Heat (1995).' (feedback and answers to questions)."""
    return f"Noted that you like {ref.natural_label()}." if polarity == "like" else f"Dropped {ref.natural_label()}."

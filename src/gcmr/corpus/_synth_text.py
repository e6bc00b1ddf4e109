"""Text of the synthetic world: human queries and captioner-style captions of a latent scene.

Humans (``render_query``) pick synonyms freely, vary the template and word order, leave
0-2 attributes out, sometimes name the super-category instead of the category, add filler
words and make typos. The captioner (``render_caption``) is formulaic and complete: every
attribute, canonical words, "a photo of ...". That gap is the gap between generated
pseudo-queries and human queries that caption enhancement (CART, AVG) has to bridge.

Each query also returns its *mention pattern*: which latent factors its text pins down.
The oracle (``synth.match_counts``) works on these patterns, never on the surface text, so a
synonym or a typo still denotes the same attribute. Pattern bits: bit ``f`` = factor ``f``
of :data:`FACTORS` is mentioned; :data:`SUBJECT_AS_SUPER` = the subject is named by its
super-category only ("an animal"); :data:`COUNT_AS_NUMBER` = the count is left out, so only
singular vs plural is known (the noun's number still shows).

All randomness comes from the ``random.Random`` passed in, seeded per item by the caller, so
an item's text depends only on the seed and its index (not on chunking or on which split is
written first). Typo draws are taken for every word whatever the typo rate, so changing the
rate changes only the typos.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from gcmr.corpus import _synth_vocab as V

SUBJECT_AS_SUPER = 1 << len(V.FACTORS)
COUNT_AS_NUMBER = 1 << (len(V.FACTORS) + 1)

# How many of the droppable factors a human leaves out: 0, 1 or 2.
DROP_WEIGHTS = (0.35, 0.40, 0.25)
# Relative chance that each droppable factor is the one left out.
DROP_PREFERENCE = {V.COUNT: 1.0, V.COLOUR: 1.0, V.SIZE: 1.0, V.AGE: 1.0,
                   V.ACTION: 0.7, V.PLACE: 0.8, V.TIME: 1.2}
_ATTRIBUTE_COLUMNS = (V.SIZE, V.AGE, V.COLOUR)  # English adjective order
_VOWELS = frozenset("aeiou")
_CANONICAL = 0.85  # the captioner's chance of using the canonical word

_KEYBOARD = {
    "q": "wa", "w": "qes", "e": "wrd", "r": "etf", "t": "ryg", "y": "tuh", "u": "yij",
    "i": "uok", "o": "ipl", "p": "ol", "a": "qsz", "s": "adwx", "d": "sfec", "f": "dgrv",
    "g": "fhtb", "h": "gjyn", "j": "hkum", "k": "jlim", "l": "kop", "z": "asx", "x": "zsdc",
    "c": "xdfv", "v": "cfgb", "b": "vghn", "n": "bhjm", "m": "njk",
}
_WORDS = V.word_set()


def _pick(rnd: random.Random, options: Sequence[str]) -> str:
    return options[int(rnd.random() * len(options))]


def _captioner_pick(rnd: random.Random, options: Sequence[str]) -> str:
    if len(options) == 1 or rnd.random() < _CANONICAL:
        return options[0]
    return options[1 + int(rnd.random() * (len(options) - 1))]


def _fix_articles(words: list[str]) -> list[str]:
    """'a' before a vowel becomes 'an' (and back), so every template can just write 'a'."""
    for i in range(len(words) - 1):
        if words[i] in ("a", "an"):
            words[i] = "an" if words[i + 1][:1] in _VOWELS else "a"
    return words


def _typo(word: str, kind: float, pos: float) -> str:
    """One human typo: drop a final 'g' of -ing, delete, swap, double or mistype a letter."""
    n = len(word)
    if kind < 0.2 and word.endswith("ing"):
        return word[:-1]  # "runnin"
    i = 1 + int(pos * (n - 2))  # an interior position: keep the first letter
    if kind < 0.4:
        return word[:i] + word[i + 1:]
    if kind < 0.6:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:] if word[i] != word[i + 1] \
            else word[:i] + word[i + 1:]
    if kind < 0.8:
        return word[:i] + word[i] + word[i:]
    near = _KEYBOARD.get(word[i], "")
    if not near:
        return word[:i] + word[i + 1:]
    return word[:i] + near[int(pos * 997) % len(near)] + word[i + 1:]


def add_typos(words: list[str], rnd: random.Random, rate: float) -> list[str]:
    """Each word of 4+ letters gets a typo with probability ``rate``; a typo that happens to
    spell another vocabulary word is not made (it would change the meaning, not the form).
    One draw per word is always taken, so the stream does not depend on ``rate``; given a
    typo, that draw rescaled to [0, 1) also picks its kind and position."""
    out = list(words)
    for j, u in enumerate([rnd.random() for _ in words]):
        word = out[j]
        if u < rate and len(word) >= 4 and word.isalpha():
            v = u / rate
            typo = _typo(word, v, (v * 7919.0) % 1.0)
            if typo not in _WORDS and typo != word:
                out[j] = typo
    return out


def _noun(scene: Sequence[int], rnd: random.Random, as_super: bool, captioner: bool) -> str:
    cat = scene[V.CATEGORY]
    nouns = V.SUPERS[V.SUPER_OF[cat]].hypernyms if as_super else V.CATEGORY_NOUNS[cat]
    if captioner:
        noun = nouns[0] if len(nouns) == 1 or rnd.random() < _CANONICAL else \
            nouns[1 + int(rnd.random() * (len(nouns) - 1))]
    else:
        noun = nouns[int(rnd.random() * len(nouns))]
    return noun.plural if scene[V.COUNT] > 1 else noun.singular


def _adjectives(scene: Sequence[int], keep: set[int], rnd: random.Random,
                captioner: bool) -> tuple[list[str], str | None]:
    """Adjectives before the noun, and the clothing phrase for people ("in red")."""
    pick = _captioner_pick if captioner else _pick
    clothing = V.SUPERS[V.SUPER_OF[scene[V.CATEGORY]]].colour_as_clothing
    adjs: list[str] = []
    post = None
    for col in _ATTRIBUTE_COLUMNS:
        value = scene[col]
        if not value or col not in keep:
            continue
        table = V.ATTRIBUTE_FORMS[col - V.COLOUR]
        form = pick(rnd, table[V.FACTOR_VALUES[col][value]])
        if col == V.COLOUR and clothing:
            post = f"{'wearing' if captioner else _pick(rnd, V.CLOTHING)} {form}"
        else:
            adjs.append(form)
    return adjs, post


def render_caption(scene: Sequence[int], rnd: random.Random, prefix: str) -> str:
    """A complete, formulaic caption: 'a photo of two brown dogs running on a beach during
    the day.' Mentions every factor of the scene with (mostly) canonical words."""
    count = scene[V.COUNT]
    every = set(range(len(V.FACTORS)))
    adjs, post = _adjectives(scene, every, rnd, captioner=True)
    noun = _noun(scene, rnd, False, captioner=True)
    place = V.PLACES[V.PLACE_NAMES[scene[V.PLACE]]]
    words = [V.COUNT_WORDS_CAPTION[count], *adjs, noun]
    if post:
        words.append(post)
    words.append(_captioner_pick(rnd, V.ACTIONS[V.ACTION_NAMES[scene[V.ACTION]]]))
    words.append(f"{_captioner_pick(rnd, place.preps)} {_captioner_pick(rnd, place.nouns)}")
    words.append(_captioner_pick(rnd, V.TIMES[V.TIME_NAMES[scene[V.TIME]]].phrases))
    if prefix == "there is" and count > 1:
        prefix = "there are"
    text = " ".join(_fix_articles(" ".join([prefix, *words]).split()))
    return text[0].upper() + text[1:] + "." if not prefix else text + "."


def render_captions(scene: Sequence[int], rnd: random.Random, n: int) -> list[str]:
    """``n`` captions with distinct prefixes (cycling through them when n is large)."""
    prefixes = list(V.CAPTION_PREFIXES)
    rnd.shuffle(prefixes)
    return [render_caption(scene, rnd, prefixes[i % len(prefixes)]) for i in range(n)]


def _dropped(scene: Sequence[int], rnd: random.Random) -> set[int]:
    """The factors a human leaves out: 0-2 of count, the present attributes, action, place
    and time (the subject is always said)."""
    u = rnd.random()
    n = 0 if u < DROP_WEIGHTS[0] else 1 if u < DROP_WEIGHTS[0] + DROP_WEIGHTS[1] else 2
    dropped: set[int] = set()
    if not n:
        return dropped
    droppable = [V.COUNT] + [c for c in (V.COLOUR, V.SIZE, V.AGE) if scene[c]] + \
        [V.ACTION, V.PLACE, V.TIME]
    for _ in range(n):  # weighted sampling without replacement
        left = [c for c in droppable if c not in dropped]
        total = sum(DROP_PREFERENCE[c] for c in left)
        x = rnd.random() * total
        for c in left:
            x -= DROP_PREFERENCE[c]
            if x < 0:
                break
        dropped.add(c)
    return dropped


def _clean_query(scene: Sequence[int], rnd: random.Random, *, filler_rate: float,
                 hypernym_rate: float) -> tuple[list[str], int]:
    """The words of one human query before typos, and its mention pattern."""
    dropped = _dropped(scene, rnd)
    as_super = rnd.random() < hypernym_rate
    keyword = rnd.random() < 0.15  # search-box style: "brown dog running park night"
    count = scene[V.COUNT]
    # what the text pins down: absent attributes are not said (so any value matches them)
    keep = {f for f in range(len(V.FACTORS)) if f not in dropped
            and (scene[f] or f not in _ATTRIBUTE_COLUMNS)}
    adjs, post = _adjectives(scene, keep, rnd, captioner=False)
    noun = _noun(scene, rnd, as_super, captioner=False)
    if V.COUNT in keep:
        det = _pick(rnd, V.COUNT_WORDS_HUMAN[count])
        if keyword and count == 1:
            det = ""
    else:
        det = _pick(rnd, V.UNCOUNTED_PLURAL if count > 1 else V.UNCOUNTED_SINGULAR)
    subject = " ".join(w for w in (det, *adjs, noun, post or "") if w)
    action = _pick(rnd, V.ACTIONS[V.ACTION_NAMES[scene[V.ACTION]]]) \
        if V.ACTION in keep else None
    place = None
    if V.PLACE in keep:
        spec = V.PLACES[V.PLACE_NAMES[scene[V.PLACE]]]
        prep, pnoun = _pick(rnd, spec.preps), _pick(rnd, spec.nouns)
        if rnd.random() < 0.1:  # hasty: "in park"
            prep = prep.split()[0]
        place = pnoun if keyword else f"{prep} {pnoun}"
    time = None
    if V.TIME in keep:
        spec_t = V.TIMES[V.TIME_NAMES[scene[V.TIME]]]
        time = _pick(rnd, spec_t.keywords if keyword else spec_t.phrases)
    comma = "," if rnd.random() < 0.5 else ""
    t = rnd.random()
    if keyword or t < 0.30:
        parts = [subject, action, place, time]
    elif t < 0.45:
        parts = [place and place + comma, subject, action, time]
    elif t < 0.55:
        parts = [subject, place, action, time]
    elif t < 0.65:
        parts = [time and time + comma, subject, action, place]
    elif t < 0.80:
        parts = [subject, action, time, place]
    elif t < 0.90 and action:
        parts = [subject, "that", "are" if count > 1 else "is", action, place, time]
    else:
        parts = [place, time, subject, action]
    if rnd.random() < filler_rate:
        if rnd.random() < 0.6:
            parts.insert(0, _pick(rnd, V.FILLER_PREFIXES))
        else:
            parts.append(_pick(rnd, V.FILLER_SUFFIXES))
    words = _fix_articles(" ".join(p for p in parts if p).split())
    words[-1] = words[-1].removesuffix(",")
    pattern = sum(1 << f for f in keep)
    pattern |= 1 << V.COUNT  # the noun's number always shows ...
    if V.COUNT not in keep:
        pattern |= COUNT_AS_NUMBER  # ... but only singular vs plural without a count word
    if as_super:
        pattern |= SUBJECT_AS_SUPER
    return words, pattern


def render_queries(scene: Sequence[int], rnd: random.Random, n: int, *, typo_rate: float,
                   filler_rate: float, hypernym_rate: float) -> list[tuple[str, int]]:
    """``n`` distinct human queries of a scene as (text, mention pattern) pairs."""
    out: list[tuple[str, int]] = []
    seen: set[str] = set()
    for _ in range(n):
        for _attempt in range(8):  # avoid the same clean text twice for one item
            words, pattern = _clean_query(scene, rnd, filler_rate=filler_rate,
                                          hypernym_rate=hypernym_rate)
            clean = " ".join(words)
            if clean not in seen:
                break
        seen.add(clean)
        typed = add_typos(words, rnd, typo_rate)
        capital = rnd.random() < 0.08
        text = " ".join(typed)
        if capital:
            text = text[0].upper() + text[1:]
        out.append((text, pattern))
    return out

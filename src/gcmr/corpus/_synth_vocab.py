"""Vocabulary of the synthetic world (see :mod:`gcmr.corpus.synth`): what a scene can contain
and every surface form a human or the captioner may use for it.

Every latent value has two or more surface forms where the brief asks for synonyms (nouns,
verbs, places); the first form is canonical (the captioner prefers it). A surface form never
denotes two latent values of the same factor, and no form of one factor is a word of another
factor's form, so the latent attributes a query mentions are exactly what its text says
(tests check both). Plain data only: the tables below are built once at import.
"""

from __future__ import annotations

from dataclasses import dataclass

# Factor columns of a scene row (``scenes.npy``): value 0 of an attribute means "not present".
FACTORS = ("category", "count", "colour", "size", "age", "action", "place", "time")
CATEGORY, COUNT, COLOUR, SIZE, AGE, ACTION, PLACE, TIME = range(len(FACTORS))
ATTRIBUTE_KINDS = ("colour", "size", "age")  # adjective order in English: size, age, colour

_IRREGULAR = {"man": "men", "woman": "women", "child": "children", "sheep": "sheep",
              "deer": "deer", "aircraft": "aircraft", "watercraft": "watercraft",
              "sushi": "sushi", "food": "food", "fish": "fish", "salad": "salads"}


def plural(word: str) -> str:
    """English plural of a (possibly multi-word) noun: the last word is inflected."""
    head, _, last = word.rpartition(" ")
    if last in _IRREGULAR:
        out = _IRREGULAR[last]
    elif last.endswith("y") and last[-2:-1] not in ("a", "e", "i", "o", "u"):
        out = last[:-1] + "ies"
    elif last.endswith(("s", "sh", "ch", "x")):
        out = last + "es"
    else:
        out = last + "s"
    return f"{head} {out}" if head else out


@dataclass(frozen=True)
class Noun:
    singular: str
    plural: str


def _nouns(forms: str) -> tuple[Noun, ...]:
    """``"dog|puppy|hound"`` -> nouns with regular (or known irregular) plurals."""
    return tuple(Noun(f, plural(f)) for f in forms.split("|"))


@dataclass(frozen=True)
class Super:
    """A super-category: its hypernyms, categories and what its members can do, be and where."""

    name: str
    hypernyms: tuple[Noun, ...]
    categories: tuple[tuple[str, tuple[Noun, ...]], ...]
    actions: tuple[str, ...]  # compatible actions, most frequent first
    places: tuple[str, ...]  # preferred places (boosted), the others stay possible
    colours: tuple[str, ...]
    sizes: tuple[str, ...]
    ages: tuple[str, ...]
    colour_as_clothing: bool = False  # people: "a man in red", not "a red man"


def _super(name: str, hypernyms: str, categories: str, *, actions: str, places: str,
           colours: str = "", sizes: str = "", ages: str = "",
           colour_as_clothing: bool = False) -> Super:
    cats = []
    for spec in categories.split(";"):
        cat_name, _, forms = spec.strip().partition("=")
        cats.append((cat_name.strip(), _nouns(forms.strip())))
    def split(text: str) -> tuple[str, ...]:
        return tuple(x.strip() for x in text.split(",") if x.strip())

    return Super(name, _nouns(hypernyms), tuple(cats), split(actions), split(places),
                 split(colours), split(sizes), split(ages), colour_as_clothing)


_ANIMAL_COLOURS = "brown, black, white, grey, golden, spotted"
SUPERS: tuple[Super, ...] = (
    _super("pets", "pet|domestic animal",
           "dog=dog|puppy|hound; cat=cat|kitten|kitty; rabbit=rabbit|bunny; horse=horse|pony;"
           "cow=cow|calf; sheep=sheep|lamb",
           actions="running, sleeping, eating, playing, sitting, jumping, swimming",
           places="park, garden, living room, field, farm, beach, lawn",
           colours=_ANIMAL_COLOURS, sizes="small, large, tiny", ages="young, old"),
    _super("wild animals", "wild animal|wild beast",
           "lion=lion|lioness; elephant=elephant|pachyderm; bear=bear|grizzly; deer=deer|stag;"
           "monkey=monkey|chimp; fox=fox|vixen",
           actions="walking, running, sleeping, eating, drinking, hunting, climbing",
           places="forest, zoo, jungle, field, mountain, river, desert",
           colours=_ANIMAL_COLOURS, sizes="small, large, huge", ages="young, old"),
    _super("birds", "bird",
           "eagle=eagle|raptor; duck=duck|duckling; owl=owl|owlet; parrot=parrot|macaw;"
           "pigeon=pigeon|dove; seagull=seagull|gull",
           actions="flying, perched, eating, swimming, walking, nesting",
           places="sky, lake, forest, park, river, beach, city square",
           colours="white, black, grey, brown, red, blue, green, yellow",
           sizes="small, large", ages="young, old"),
    _super("people", "person|human",
           "man=man|guy|gentleman; woman=woman|lady; boy=boy|lad; girl=girl|lass;"
           "child=child|kid|youngster; baby=baby|toddler|infant",
           actions="walking, running, sitting, eating, playing, dancing, reading, talking",
           places="park, street, beach, office, restaurant, kitchen, city square, playground,"
           "stadium",
           colours="red, blue, green, yellow, black, white, pink, purple, orange",
           sizes="tall, short", ages="young, old", colour_as_clothing=True),
    _super("road vehicles", "vehicle|motor vehicle",
           "car=car|automobile|sedan; bus=bus|coach; truck=truck|lorry;"
           "motorcycle=motorcycle|motorbike; bicycle=bicycle|bike; van=van|minivan",
           actions="parked, driving, racing, crashed, turning",
           places="street, highway, parking lot, city square, desert, mountain, village",
           colours="red, blue, green, yellow, black, white, grey, orange, silver",
           sizes="small, large", ages="old, new, vintage, rusty"),
    _super("watercraft", "watercraft",
           "boat=boat|dinghy; ship=ship|vessel; sailboat=sailboat|yacht; canoe=canoe|kayak",
           actions="sailing, docked, floating, sinking",
           places="lake, river, harbor, beach, island, swamp",
           colours="red, blue, white, yellow, black, orange", sizes="small, large, huge",
           ages="old, new, rusty"),
    _super("aircraft", "aircraft",
           "airplane=airplane|plane|jet; helicopter=helicopter|chopper;"
           "balloon=hot air balloon|balloon; drone=drone|quadcopter",
           actions="flying, landing, taking off, hovering",
           places="sky, airport, field, mountain, city square, desert",
           colours="red, blue, white, yellow, silver, orange", sizes="small, large, huge",
           ages="old, new, vintage"),
    _super("food", "food|dish|meal",
           "pizza=pizza|pizza pie; burger=burger|hamburger; cake=cake|gateau;"
           "salad=salad|salad bowl; sandwich=sandwich|sub; sushi=sushi|maki",
           actions="served, being cooked, sliced, half eaten, on display",
           places="kitchen, restaurant, market, picnic, living room, office",
           sizes="small, large, huge", ages="fresh, homemade, burnt"),
    _super("buildings", "building|structure",
           "house=house|cottage|home; church=church|chapel; tower=tower|spire;"
           "castle=castle|fortress; skyscraper=skyscraper|high-rise",
           actions="standing, lit up, under construction, in ruins, reflected in water",
           places="city square, street, village, mountain, river, island, forest",
           colours="white, red, grey, brown, yellow, blue", sizes="small, tall, huge",
           ages="old, ancient, modern, new"),
)

# Latent actions: participle phrases, first form canonical.
ACTIONS: dict[str, tuple[str, ...]] = {
    "running": ("running", "sprinting", "dashing"),
    "sleeping": ("sleeping", "napping", "dozing"),
    "eating": ("eating", "munching", "feeding"),
    "playing": ("playing", "frolicking"),
    "sitting": ("sitting", "resting", "lounging"),
    "jumping": ("jumping", "leaping"),
    "swimming": ("swimming", "paddling"),
    "walking": ("walking", "strolling", "wandering"),
    "drinking": ("drinking", "sipping water"),
    "hunting": ("hunting", "stalking prey"),
    "climbing": ("climbing", "clambering"),
    "flying": ("flying", "soaring", "gliding"),
    "perched": ("perched", "roosting"),
    "nesting": ("nesting", "brooding"),
    "dancing": ("dancing", "grooving"),
    "reading": ("reading", "reading a book"),
    "talking": ("talking", "chatting"),
    "parked": ("parked", "stationary"),
    "driving": ("driving", "moving", "cruising"),
    "racing": ("racing", "speeding"),
    "crashed": ("crashed", "wrecked"),
    "turning": ("turning", "cornering"),
    "sailing": ("sailing", "navigating"),
    "docked": ("docked", "moored"),
    "floating": ("floating", "drifting"),
    "sinking": ("sinking", "going under"),
    "landing": ("landing", "touching down"),
    "taking off": ("taking off", "lifting off"),
    "hovering": ("hovering", "hanging in the air"),
    "served": ("served", "plated"),
    "being cooked": ("being cooked", "being prepared", "cooking"),
    "sliced": ("sliced", "cut up"),
    "half eaten": ("half eaten", "partly eaten"),
    "on display": ("on display", "displayed"),
    "standing": ("standing", "towering"),
    "lit up": ("lit up", "illuminated"),
    "under construction": ("under construction", "being built"),
    "in ruins": ("in ruins", "crumbling"),
    "reflected in water": ("reflected in water", "mirrored in water"),
}


@dataclass(frozen=True)
class Place:
    preps: tuple[str, ...]  # "in the", "at the", ...; first canonical
    nouns: tuple[str, ...]  # bare nouns, also the keyword forms; first canonical


def _place(preps: str, nouns: str) -> Place:
    return Place(tuple(preps.split("|")), tuple(nouns.split("|")))


PLACES: dict[str, Place] = {
    "park": _place("in the|at the|in a", "park|public garden"),
    "beach": _place("on the|at the|on a", "beach|seaside|shore"),
    "street": _place("on the|in the|on a", "street|road"),
    "forest": _place("in the|in a", "forest|woods"),
    "field": _place("in a|in the|on a", "field|meadow"),
    "kitchen": _place("in the|in a", "kitchen|kitchenette"),
    "living room": _place("in the|in a", "living room|lounge"),
    "garden": _place("in the|in a", "garden|backyard"),
    "lake": _place("on the|by the|at a", "lake|pond"),
    "river": _place("on the|by the|near a", "river|stream"),
    "mountain": _place("on a|on the|in the", "mountain|mountainside|hillside"),
    "desert": _place("in the|in a", "desert|dunes"),
    "city square": _place("in the|in a|on the", "city square|plaza"),
    "farm": _place("on a|at the|on the", "farm|ranch"),
    "airport": _place("at the|at a|near the", "airport|airfield"),
    "harbor": _place("in the|at the|in a", "harbor|port|marina"),
    "restaurant": _place("in a|at a|in the", "restaurant|diner|bistro"),
    "stadium": _place("in a|at the|in the", "stadium|arena"),
    "market": _place("at the|in a|at a", "market|bazaar"),
    "zoo": _place("at the|in a|in the", "zoo|menagerie"),
    "highway": _place("on the|on a", "highway|motorway|freeway"),
    "parking lot": _place("in a|in the", "parking lot|parking garage"),
    "lawn": _place("on the|on a", "lawn|grass"),
    "jungle": _place("in the|in a", "jungle|rainforest"),
    "swamp": _place("in a|in the", "swamp|marsh"),
    "island": _place("on a|on the", "island|isle"),
    "village": _place("in a|in the", "village|hamlet"),
    "office": _place("in a|in the|at the", "office|workplace"),
    "playground": _place("at the|in a|on the", "playground|play area"),
    "picnic": _place("at a|at the", "picnic|cookout"),
    "sky": _place("in the|across the|up in the", "sky|clouds"),
}


@dataclass(frozen=True)
class Time:
    phrases: tuple[str, ...]  # first canonical
    keywords: tuple[str, ...]


TIMES: dict[str, Time] = {
    "day": Time(("during the day", "in daylight", "in the daytime"), ("day", "daytime")),
    "night": Time(("at night", "at nighttime", "after dark"), ("night", "nighttime")),
    "sunset": Time(("at sunset", "at dusk", "in the evening"), ("sunset", "dusk", "evening")),
    "sunrise": Time(("at sunrise", "at dawn", "early in the morning"),
                    ("sunrise", "dawn", "morning")),
    "rain": Time(("in the rain", "on a rainy day", "while it rains"), ("rain", "rainy")),
    "snow": Time(("in the snow", "on a snowy day", "while it snows"), ("snow", "snowy")),
    "fog": Time(("in the fog", "on a foggy day", "in the mist"), ("fog", "foggy", "mist")),
    "storm": Time(("during a storm", "in a thunderstorm"), ("storm", "thunderstorm")),
}

# Attribute values: adjective forms, first canonical.
COLOURS: dict[str, tuple[str, ...]] = {
    "brown": ("brown",), "black": ("black",), "white": ("white",), "grey": ("grey", "gray"),
    "golden": ("golden", "gold"), "spotted": ("spotted", "dotted"), "red": ("red", "crimson"),
    "blue": ("blue", "navy"), "green": ("green",), "yellow": ("yellow",), "pink": ("pink",),
    "purple": ("purple", "violet"), "orange": ("orange",), "silver": ("silver", "metallic"),
}
SIZES: dict[str, tuple[str, ...]] = {
    "small": ("small", "little"), "large": ("large", "big"), "tiny": ("tiny", "miniature"),
    "huge": ("huge", "giant", "enormous"), "tall": ("tall",), "short": ("short",),
}
AGES: dict[str, tuple[str, ...]] = {
    "young": ("young",), "old": ("old",), "new": ("new", "brand-new"),
    "vintage": ("vintage", "retro"), "rusty": ("rusty",), "fresh": ("fresh",),
    "homemade": ("homemade", "home-made"), "burnt": ("burnt", "charred"),
    "ancient": ("ancient",), "modern": ("modern", "contemporary"),
}

COUNT_WORDS_HUMAN: dict[int, tuple[str, ...]] = {
    1: ("a", "a", "a", "one"),  # "a" is resolved to "an" before a vowel
    2: ("two", "2", "a pair of", "a couple of"),
    3: ("three", "3", "several"),
}
COUNT_WORDS_CAPTION: dict[int, str] = {1: "a", 2: "two", 3: "three"}
# When a human leaves the count out, the noun still says singular or plural.
UNCOUNTED_SINGULAR = ("a", "the", "")
UNCOUNTED_PLURAL = ("", "some", "the")
CLOTHING = ("in", "wearing", "dressed in")

FILLER_PREFIXES = ("show me", "find", "looking for", "pic of", "photo of", "image of",
                   "i want to see", "search", "any", "need a picture of", "hmm")
FILLER_SUFFIXES = ("please", "pls", "pic", "photo", "image", "maybe", "thanks")
CAPTION_PREFIXES = ("a photo of", "an image of", "a picture of", "a photograph of",
                    "there is", "")

# ----------------------------------------------------------------------------- index tables

CATEGORY_NAMES: tuple[str, ...] = tuple(name for s in SUPERS for name, _ in s.categories)
CATEGORY_NOUNS: tuple[tuple[Noun, ...], ...] = tuple(n for s in SUPERS for _, n in s.categories)
SUPER_OF: tuple[int, ...] = tuple(i for i, s in enumerate(SUPERS) for _ in s.categories)
ACTION_NAMES: tuple[str, ...] = tuple(ACTIONS)
PLACE_NAMES: tuple[str, ...] = tuple(PLACES)
TIME_NAMES: tuple[str, ...] = tuple(TIMES)
# attribute value 0 = absent, so index i + 1 names value i
COLOUR_NAMES: tuple[str, ...] = ("", *COLOURS)
SIZE_NAMES: tuple[str, ...] = ("", *SIZES)
AGE_NAMES: tuple[str, ...] = ("", *AGES)

# Value names of every factor, in scene-column order (count values are 0..3, 0 unused).
FACTOR_VALUES: tuple[tuple[str, ...], ...] = (
    CATEGORY_NAMES, ("", "1", "2", "3"), COLOUR_NAMES, SIZE_NAMES, AGE_NAMES,
    ACTION_NAMES, PLACE_NAMES, TIME_NAMES,
)
ATTRIBUTE_FORMS: tuple[dict[str, tuple[str, ...]], ...] = (COLOURS, SIZES, AGES)


def word_set() -> frozenset[str]:
    """Every word that may appear in a clean query or caption (typos never produce one)."""
    phrases: list[str] = []
    for s in SUPERS:
        phrases += [w for n in s.hypernyms for w in (n.singular, n.plural)]
    phrases += [w for nouns in CATEGORY_NOUNS for n in nouns for w in (n.singular, n.plural)]
    phrases += [f for forms in ACTIONS.values() for f in forms]
    for p in PLACES.values():
        phrases += list(p.preps) + list(p.nouns)
    for t in TIMES.values():
        phrases += list(t.phrases) + list(t.keywords)
    for table in ATTRIBUTE_FORMS:
        phrases += [f for forms in table.values() for f in forms]
    for words in COUNT_WORDS_HUMAN.values():
        phrases += list(words)
    phrases += list(UNCOUNTED_SINGULAR + UNCOUNTED_PLURAL + CLOTHING + FILLER_PREFIXES
                    + FILLER_SUFFIXES + CAPTION_PREFIXES)
    phrases += ["an", "that", "is", "are", "there", "with"]
    return frozenset(w for p in phrases for w in p.split())

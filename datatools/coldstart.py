"""A planted catalogue for cold-start items: themes whose never-seen items share no word with the seen ones.

Each theme has two disjoint word lists: titles of its warm items are made of the first ("Astronaut, Rocket"),
titles of its cold items of the second ("Nebula, Galaxy"), so no word (and no category: items have none) links a
cold item to the warm items of its theme; only what the words mean does. Each user follows one theme: a run of
its warm items, then two of its cold items, which leave-one-out holds out as the validation and the test
target. A cold item therefore has no training event at all: ids, categories, popularity and co-occurrence know
nothing of it, and a pretrained sentence encoder is the only way to place it near its theme.

Pure Python and seeded: :func:`planted_catalogue` returns plain rows (the items table's ``item_idx``,
``item_id``, ``title``, ``categories``, ``year``; the users' item sequences, oldest first) for tests and
``benchmarks/cold_items.py``.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

#: theme -> (words of its warm titles, words of its cold titles); no word is in two lists.
THEMES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "space": (
        ("astronaut", "rocket", "orbit", "spacecraft", "moon landing", "launch pad", "cosmonaut", "space station"),
        ("nebula", "galaxy", "telescope", "supernova", "comet", "black hole"),
    ),
    "cooking": (
        ("recipe", "kitchen", "chef", "baking", "oven", "dinner", "frying pan", "cookbook"),
        ("pastry", "soup", "spices", "bread", "dessert", "cuisine"),
    ),
    "sport": (
        ("football", "stadium", "goalkeeper", "striker", "league", "referee", "penalty kick", "world cup"),
        ("tennis", "marathon", "basketball", "swimming", "olympics", "cyclist"),
    ),
    "music": (
        ("guitar", "concert", "rock band", "drummer", "singer", "album", "bass player", "tour bus"),
        ("violin", "orchestra", "symphony", "piano", "opera", "choir"),
    ),
    "ocean": (
        ("sailor", "ship", "harbor", "fishing boat", "anchor", "voyage", "lighthouse", "captain"),
        ("whale", "coral reef", "dolphin", "shark", "octopus", "seaweed"),
    ),
    "medicine": (
        ("doctor", "hospital", "nurse", "surgery", "patient", "clinic", "ambulance", "surgeon"),
        ("vaccine", "virus", "pharmacy", "antibiotics", "diagnosis", "epidemic"),
    ),
    "crime": (
        ("detective", "murder", "police", "suspect", "crime scene", "investigation", "witness", "homicide"),
        ("thief", "robbery", "prison", "gangster", "heist", "kidnapping"),
    ),
    "farming": (
        ("farmer", "tractor", "harvest", "barn", "cattle", "wheat field", "plough", "hay bale"),
        ("garden", "flowers", "roses", "vegetables", "gardener", "orchard"),
    ),
}

#: Themes no user follows: their items are cold too, never a target, only there to be passed over (a catalogue's
#: new items are mostly of no interest to a given user).
DISTRACTOR_THEMES: dict[str, tuple[str, ...]] = {
    "cars": ("engine", "sports car", "motorway", "mechanic", "convertible", "race track"),
    "birds": ("parrot", "eagle", "sparrow", "owl", "pigeon", "flamingo"),
    "weather": ("thunderstorm", "hurricane", "snowfall", "rainbow", "tornado", "heatwave"),
    "finance": ("stock market", "banker", "mortgage", "inflation", "investor", "tax return"),
    "computers": ("laptop", "software", "programmer", "keyboard", "database", "internet"),
    "fashion": ("dress", "fashion show", "tailor", "handbag", "model runway", "jewelry"),
    "architecture": ("cathedral", "skyscraper", "bridge", "castle", "architect", "palace"),
    "insects": ("butterfly", "beetle", "ant colony", "honeybee", "dragonfly", "spider"),
}


@dataclass
class Planted:
    items: list[dict]  # features/items-like rows: item_idx, item_id, title, categories (empty), year (None)
    sequences: dict[str, list[str]]  # user id -> item ids, oldest first; the last two are cold items
    theme_of: dict[str, str]  # item id -> theme
    cold: set[str]  # the cold item ids


def _titles(words: tuple[str, ...], n: int) -> list[str]:
    """``n`` distinct titles from ``words``: pairs first ("Nebula, Galaxy"), then single words."""
    pairs = [f"{a.title()}, {b.title()}" for a, b in itertools.combinations(words, 2)]
    titles = pairs + [w.title() for w in words]
    if n > len(titles):
        raise ValueError(f"{n} titles asked of {len(words)} words (at most {len(titles)}); lower the item count")
    return titles[:n]


def planted_catalogue(
    n_users: int = 400,
    warm_per_theme: int = 20,
    cold_per_theme: int = 8,
    history: int = 8,
    themes: int = len(THEMES),
    seed: int = 0,
    distractors_per_theme: int = 0,
) -> Planted:
    """The planted catalogue (see the module docstring): ``themes`` themes of ``warm_per_theme`` warm and
    ``cold_per_theme`` cold items (cold items get the highest indices), ``n_users`` users of a random theme, each
    with ``history`` warm items of it then two distinct cold ones; plus ``distractors_per_theme`` cold items of
    each :data:`DISTRACTOR_THEMES` theme, which no user follows."""
    if not 1 <= themes <= len(THEMES):
        raise ValueError(f"themes={themes}: pick 1 to {len(THEMES)}")
    if history > warm_per_theme or cold_per_theme < 2:
        raise ValueError(
            f"history={history} needs warm_per_theme >= history (got {warm_per_theme}) and cold_per_theme >= 2 "
            f"(got {cold_per_theme})"
        )
    rng = random.Random(seed)
    chosen = list(THEMES.items())[:themes]
    warm, cold, theme_of, titles = {}, {}, {}, {}
    for name, (warm_words, cold_words) in chosen:
        for kind, words, n, out in (("w", warm_words, warm_per_theme, warm), ("c", cold_words, cold_per_theme, cold)):
            out[name] = []
            for j, title in enumerate(_titles(words, n)):
                item_id = f"{name}-{kind}{j:03d}"
                out[name].append(item_id)
                theme_of[item_id] = name
                titles[item_id] = title
    for name, words in DISTRACTOR_THEMES.items() if distractors_per_theme else ():
        cold[name] = []
        for j, title in enumerate(_titles(words, distractors_per_theme)):
            cold[name].append(f"{name}-c{j:03d}")
            theme_of[f"{name}-c{j:03d}"], titles[f"{name}-c{j:03d}"] = name, title
    ordered = [i for name, _ in chosen for i in warm[name]] + [i for items in cold.values() for i in items]
    items = [
        {"item_idx": k, "item_id": i, "title": titles[i], "categories": [], "year": None}
        for k, i in enumerate(ordered, start=1)
    ]
    sequences = {}
    for u in range(n_users):
        name = rng.choice(chosen)[0]
        sequences[f"u{u:04d}"] = rng.sample(warm[name], history) + rng.sample(cold[name], 2)
    return Planted(items, sequences, theme_of, {i for items in cold.values() for i in items})

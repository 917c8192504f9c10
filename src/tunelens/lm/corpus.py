"""A synthetic corpus of short, simple children's stories, in the spirit of SimpleStories.

Story i of a corpus depends only on (seed, i), and whether it belongs to the test split depends only on a hash
of (seed, i), so a bigger corpus extends a smaller one and the split never moves. Stories are mixed-case prose
with characters, places, a problem, dialogue, a resolution and a moral, drawn from a small grammar.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator

TEST_PERCENT = 5

NAMES = ["Mia", "Leo", "Ava", "Sam", "Nora", "Finn", "Lily", "Omar", "Zoe", "Ben", "Ivy", "Max", "Ruby", "Theo",
         "Ella", "Kai", "Rosa", "Jack", "Maya", "Eli", "Tara", "Hugo", "Lena", "Noah", "Iris", "Otto", "June", "Ravi"]
KINDS = [("girl", "she", "her"), ("boy", "he", "his"), ("fox", "it", "its"), ("rabbit", "she", "her"),
         ("bear", "he", "his"), ("owl", "she", "her"), ("mouse", "he", "his"), ("duck", "she", "her"),
         ("turtle", "he", "his"), ("cat", "she", "her"), ("puppy", "he", "his"), ("squirrel", "she", "her"),
         ("frog", "he", "his"), ("robot", "it", "its"), ("dragon", "she", "her"), ("hedgehog", "he", "his")]
TRAITS = ["curious", "shy", "brave", "kind", "clever", "sleepy", "cheerful", "careful", "busy", "gentle", "silly",
          "quiet", "proud", "friendly", "small", "clumsy"]
PLACES = ["a quiet village by the sea", "a big green forest", "a little house on a hill", "a busy town",
          "a farm near the river", "a snowy mountain", "a garden full of flowers", "a small school",
          "an old library", "a sunny beach", "a park with tall trees", "a boat on a calm lake", "a windy meadow",
          "a bakery on Main Street", "a cave behind a waterfall", "a city full of lights"]
TIMES = ["One morning", "Once upon a time", "One rainy day", "Every summer", "Late one evening", "On a cold winter day",
         "One spring afternoon", "Long ago", "On the first day of school", "One windy night"]
OBJECTS = ["red kite", "blue ball", "shiny key", "old map", "wooden boat", "yellow hat", "music box", "small bell",
           "lost letter", "golden coin", "paper lantern", "green scarf", "book of songs", "toy train", "jar of honey",
           "magic stone"]
FEELINGS = ["happy", "sad", "worried", "excited", "scared", "surprised", "proud", "lonely", "calm", "grateful"]
HELPERS = ["an old turtle", "a wise owl", "a tall giraffe", "a kind baker", "a friendly bee", "a little sparrow",
           "a patient teacher", "a gentle horse", "a funny goat", "a busy beaver", "a helpful neighbor", "grandma"]
MORALS = [
    "Sharing makes everyone happier.", "It is good to ask for help when you need it.",
    "Being kind is always worth it.", "Friends make hard things easier.", "Trying again is how we learn.",
    "Telling the truth is brave.", "Small steps can lead to big things.", "Listening is a kind of helping.",
    "Everyone is good at something.", "Patience brings good surprises.", "Taking care of others takes care of us.",
    "It is okay to feel scared and still be brave.",
]
SAYS = ["said", "asked", "whispered", "shouted", "called", "laughed", "cried", "replied"]


def _character(rng: random.Random) -> dict[str, str]:
    kind, pronoun, possessive = rng.choice(KINDS)
    return {"name": rng.choice(NAMES), "kind": kind, "he": pronoun, "his": possessive, "trait": rng.choice(TRAITS)}


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _lost_object(rng: random.Random, hero: dict, friend: dict) -> list[str]:
    thing, helper = rng.choice(OBJECTS), rng.choice(HELPERS)
    where = rng.choice(["under the bed", "behind the old tree", "in the tall grass", "near the pond",
                        "on top of the shelf", "inside a hollow log", "under a pile of leaves"])
    return [
        f"{hero['name']} had a {thing} that {hero['he']} loved very much.",
        f"But one day, the {thing} was gone, and {hero['name']} felt {rng.choice(['sad', 'worried', 'lonely'])}.",
        f"\"Where could it be?\" {hero['name']} {rng.choice(SAYS)}.",
        f"{_cap(hero['he'])} looked everywhere with {friend['name']} the {friend['kind']}.",
        f"Then {helper} came by and said, \"Have you looked {where}?\"",
        f"They ran to look, and there it was, {where}!",
        f"{hero['name']} hugged {friend['name']} and said, \"Thank you for helping me.\"",
    ]


def _big_wish(rng: random.Random, hero: dict, friend: dict) -> list[str]:
    wish = rng.choice(["climb the tallest hill", "build a tower of blocks", "sing in front of the town",
                       "learn to swim", "bake a cake for a friend", "fly a kite higher than the clouds",
                       "read a whole book alone", "win the spring race"])
    return [
        f"{hero['name']} wanted to {wish}.",
        f"\"I can do it!\" {hero['he']} {rng.choice(SAYS)}, but the first try did not go well.",
        f"{_cap(hero['he'])} felt {rng.choice(['sad', 'tired', 'upset'])} and sat down under a tree.",
        f"{friend['name']} the {friend['kind']} came over. \"Let us try together,\" {friend['he']} said.",
        f"They practiced every day, a little at a time.",
        f"At last, {hero['name']} was able to {wish}, and everyone cheered.",
    ]


def _scary_thing(rng: random.Random, hero: dict, friend: dict) -> list[str]:
    fear = rng.choice(["the dark", "loud thunder", "the deep water", "a strange noise", "the big dog next door",
                       "the tall slide", "the long bridge"])
    return [
        f"{hero['name']} was afraid of {fear}.",
        f"When {fear} came near, {hero['he']} hid and closed {hero['his']} eyes.",
        f"\"What is wrong?\" {friend['name']} {rng.choice(['asked', 'whispered'])}.",
        f"\"I am scared of {fear},\" said {hero['name']} in a small voice.",
        f"{friend['name']} held {hero['his']} hand. \"I am here with you,\" {friend['he']} said.",
        f"Slowly, {hero['name']} opened {hero['his']} eyes, and {fear} did not seem so bad after all.",
    ]


def _friend_in_need(rng: random.Random, hero: dict, friend: dict) -> list[str]:
    trouble = rng.choice(["was stuck in the mud", "had a broken wing", "could not find the way home",
                          "had no food for the winter", "had dropped all the apples", "had a hole in the roof"])
    return [
        f"One day, {hero['name']} heard a sound. It was {friend['name']} the {friend['kind']}.",
        f"{friend['name']} {trouble}.",
        f"\"Please help me,\" {friend['name']} {rng.choice(['cried', 'called', 'said'])}.",
        f"{hero['name']} was {hero['trait']}, but {hero['he']} knew what to do.",
        f"{_cap(hero['he'])} brought {rng.choice(['a rope', 'a basket', 'some bread', 'a warm blanket', 'a lamp'])} "
        f"and worked hard until the sun went down.",
        f"\"You are a true friend,\" said {friend['name']}, and they both smiled.",
    ]


PLOTS = [_lost_object, _big_wish, _scary_thing, _friend_in_need]


def make_story(seed: int, index: int) -> str:
    """Story `index` of the corpus with this seed (deterministic)."""
    rng = random.Random(f"{seed}:{index}")
    hero, friend = _character(rng), _character(rng)
    while friend["name"] == hero["name"]:
        friend["name"] = rng.choice(NAMES)
    opening = (f"{rng.choice(TIMES)}, in {rng.choice(PLACES)}, there lived a {hero['trait']} {hero['kind']} "
               f"named {hero['name']}.")
    middle = rng.choice(PLOTS)(rng, hero, friend)
    feeling = f"That night, {hero['name']} felt {rng.choice(['happy', 'proud', 'grateful', 'calm', 'warm inside'])}."
    lesson = rng.choice(MORALS)
    if rng.random() < 0.5:
        lead = rng.choice(["From that day on", "And so", "In the end"])
        lesson = f"{lead}, {hero['name']} knew one thing: {lesson[0].lower()}{lesson[1:]}"
    return " ".join([opening, *middle, feeling, lesson])


def is_test(seed: int, index: int) -> bool:
    digest = hashlib.sha256(f"split:{seed}:{index}".encode()).digest()
    return digest[0] * 100 // 256 < TEST_PERCENT


def iter_split(split: str, seed: int = 0) -> Iterator[str]:
    """Endless stream of the split's stories, in corpus order."""
    index = 0
    while True:
        if is_test(seed, index) == (split == "test"):
            yield make_story(seed, index)
        index += 1


def story_splits(n_train: int, n_test: int, seed: int = 0) -> tuple[list[str], list[str]]:
    train, test = iter_split("train", seed), iter_split("test", seed)
    return [next(train) for _ in range(n_train)], [next(test) for _ in range(n_test)]

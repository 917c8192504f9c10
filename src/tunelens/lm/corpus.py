"""A synthetic corpus of short, simple children's stories, in the spirit of SimpleStories.

Story i of a corpus depends only on (seed, i), and whether it belongs to the test split depends only on a hash
of (seed, i), so a bigger corpus extends a smaller one and the split never moves. Each story is mixed-case prose
in paragraphs: an opening that introduces a character and a place, one of ten plot shapes (a loss, a skill, a
fear, a rescue, a quarrel, a broken thing, a newcomer, a journey, a surprise, a storm) with quoted dialogue, and
an ending with a moral that fits the plot. Names, kinds, places, objects and the plot's own details are slots
that recur across the story, so a small model has to track who and what the story is about, not just n-grams.
Bump CORPUS_VERSION whenever the text of any story changes: cached models trained on the old text are keyed by it.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

CORPUS_VERSION = 2
TEST_PERCENT = 5

GIRL_NAMES = ["Mia", "Ava", "Nora", "Lily", "Zoe", "Ivy", "Ruby", "Ella", "Rosa", "Maya", "Tara", "Lena", "Iris",
              "June", "Lucy", "Anna", "Sara", "Emma", "Hana", "Pia", "Nina", "Olive", "Daisy", "Amara", "Fern",
              "Clara", "Wren", "Luna", "Bea", "Tess"]
BOY_NAMES = ["Leo", "Sam", "Finn", "Omar", "Ben", "Max", "Theo", "Kai", "Jack", "Eli", "Hugo", "Noah", "Otto",
             "Ravi", "Tom", "Milo", "Leon", "Arlo", "Jonah", "Felix", "Tim", "Oscar", "Dev", "Ezra", "Luca", "Pablo",
             "Kofi", "Ivan", "Rafi", "Gus"]
CHILD_KINDS = {"she": ["girl", "little girl"], "he": ["boy", "little boy"]}
ANIMALS = ["fox", "rabbit", "bear", "owl", "mouse", "duck", "turtle", "cat", "puppy", "squirrel", "frog", "hedgehog",
           "deer", "goat", "pig", "lamb", "kitten", "penguin", "lion cub", "elephant", "monkey", "pony", "hen",
           "beaver", "otter", "raccoon", "badger", "snail", "robot", "dragon"]
TRAITS = ["curious", "shy", "brave", "kind", "clever", "sleepy", "cheerful", "careful", "busy", "gentle", "silly",
          "quiet", "proud", "friendly", "small", "clumsy", "happy", "bold", "polite", "playful"]
PLACES = ["a quiet village by the sea", "a big green forest", "a little house on a hill", "a busy town",
          "a farm near the river", "a village high on a snowy mountain", "a garden full of flowers", "a small school",
          "an old library", "a house by a sunny beach", "a park with tall trees", "a boat on a calm lake",
          "a windy meadow",
          "a bakery on Main Street", "a cave behind a waterfall", "a city full of lights", "a tree house",
          "a warm den under a hill", "a pond with lily pads", "a toy shop", "a castle made of stone", "a zoo",
          "a little hut on a sunny island", "a field of sunflowers", "a cozy cottage in the woods"]
TIMES = ["Once upon a time", "One morning", "One rainy day", "Every summer", "Late one evening", "Long ago",
         "On a cold winter day", "One spring afternoon", "On the first day of school", "One windy night",
         "One bright day", "In the middle of autumn"]
COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "pink", "white", "golden", "silver", "brown"]
THINGS = ["kite", "ball", "hat", "scarf", "boat", "bell", "key", "drum", "box", "cup", "shell", "button",
          "balloon", "blanket", "teddy bear", "pencil", "whistle", "umbrella", "bucket", "ribbon"]
RELATIVES = ["mom", "dad", "grandma", "grandpa", "big sister", "big brother", "aunt", "uncle"]
HOBBIES = ["paint pictures", "sing songs", "read books", "build with blocks", "dance in the rain", "collect stones",
           "count the stars", "bake cookies", "play the drum", "draw maps", "climb trees", "look at bugs",
           "tell jokes", "grow flowers", "ride a red bike"]
HELPERS = ["an old turtle", "a wise owl", "a tall giraffe", "a kind baker", "a friendly bee", "a little sparrow",
           "a patient teacher", "a gentle horse", "a funny goat", "a busy beaver", "a helpful neighbor",
           "a sleepy cat"]
SAYS = ["said", "asked", "whispered", "called", "laughed", "replied", "shouted"]


@dataclass(frozen=True)
class Character:
    """Pronouns are fields named by their masculine form, so a template reads "{hero.he} lost {hero.his} hat"."""

    name: str
    kind: str
    he: str
    trait: str
    hobby: str

    @property
    def him(self) -> str:
        return {"she": "her", "he": "him"}[self.he]

    @property
    def his(self) -> str:
        return {"she": "her", "he": "his"}[self.he]


Paragraphs = list[list[str]]
Plot = Callable[[random.Random, Character, Character, str], tuple[Paragraphs, list[str]]]


def _character(rng: random.Random, taken: set[str], child_frac: float) -> Character:
    he = rng.choice(["she", "he"])
    name = rng.choice([n for n in (GIRL_NAMES if he == "she" else BOY_NAMES) if n not in taken])
    kind = rng.choice(CHILD_KINDS[he]) if rng.random() < child_frac else rng.choice(ANIMALS)
    return Character(name, kind, he, rng.choice(TRAITS), rng.choice(HOBBIES))


def _cap(text: str) -> str:
    """Capitalise every sentence start, so templates can put a pronoun or a slot first without caring."""
    return re.sub(r"(^|[.!?] )([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _thing(rng: random.Random) -> str:
    return f"{rng.choice(COLORS)} {rng.choice(THINGS)}"


# ---------------------------------------------------------------------------------------------------- plots
# Each plot returns its paragraphs and the morals that fit it; pairs such as (trouble, fix) keep the parts of a
# story consistent with each other.


def _lost_thing(rng: random.Random, hero: Character, friend: Character, relative: str) -> tuple[Paragraphs, list[str]]:
    thing = _thing(rng)
    spot, finder = rng.choice([("under the bed", "It had rolled there in the night"),
                               ("in a bird's nest", "A little bird had taken it to make a soft home"),
                               ("behind the old tree", "The wind had blown it away"),
                               ("in the tall grass", "It had fallen out of a pocket"),
                               ("on top of the shelf", f"{hero.his} {relative} had put it there to keep it safe"),
                               ("inside a hollow log", "A playful squirrel had hidden it there"),
                               ("under a pile of leaves", "The leaves had covered it like a blanket")])
    return [
        [f"{hero.name} had {_a(thing)} from {hero.his} {relative}.",
         rng.choice([f"{hero.he} took it everywhere.", f"it was {hero.his} favorite thing in the whole world.",
                     f"{hero.he} loved it very much."])],
        [rng.choice(["But one day, the", "One morning, the", "After lunch, the"]) + f" {thing} was gone!",
         f"{hero.name} felt {rng.choice(['sad', 'worried', 'upset'])}.",
         f"\"Where could it be?\" {hero.he} {rng.choice(['asked', 'cried', 'whispered'])}.",
         f"{friend.name} the {friend.kind} came to help.",
         rng.choice([f"\"Let us look together,\" {friend.he} said.", f"\"Do not worry, we will find it,\" said "
                     f"{friend.name}.", f"\"Two sets of eyes are better than one,\" {friend.he} said."]),
         f"They looked in the house, in the garden and by the gate, but the {thing} was not there."],
        [f"Then {rng.choice(HELPERS)} came by and said, \"Have you looked {spot}?\"",
         f"They ran to see, and there it was, {spot}!",
         f"{finder}.",
         f"{hero.name} hugged {friend.name}. \"Thank you for helping me,\" {hero.he} said."],
    ], ["it is good to ask for help when you need it.", "friends make hard things easier.",
        "a calm look can find what a worried look cannot.", "good friends help you look for what you lost."]


def _learn_skill(rng: random.Random, hero: Character, friend: Character, relative: str) -> tuple[Paragraphs, list[str]]:
    skill, fail, event = rng.choice([
        ("ride a bike", "wobbled and fell into a bush", "the big race in the park"),
        ("swim", "splashed and swallowed a lot of water", "the summer swim at the lake"),
        ("whistle a tune", "only made a tiny puff of air", "the music show at school"),
        ("bake bread", "made a loaf as hard as a rock", "the village fair"),
        ("fly a kite", "watched the kite crash into a tree", "the kite day on the hill"),
        ("jump rope", "tangled the rope around both feet", "the jumping game at school"),
        ("read a whole book", "got stuck on a long word", "story time at the library"),
        ("juggle three balls", "dropped every ball on the floor", "the talent show"),
    ])
    return [
        [f"{hero.name} wanted to learn to {skill}.",
         f"there was going to be {event}, and {hero.he} wanted to be part of it.",
         f"\"I can do it!\" {hero.he} said."],
        [f"on the first try, {hero.name} {fail}.",
         f"on the second try, {hero.he} {fail} again.",
         f"{hero.he} sat down and felt {rng.choice(['sad', 'tired', 'grumpy', 'small'])}.",
         rng.choice([f"\"Maybe I am not good at this,\" {hero.he} said.", f"\"I will never learn,\" {hero.he} "
                     "sighed.", f"\"This is too hard,\" {hero.he} said."])],
        [f"{hero.his} {relative} sat down next to {hero.him}.",
         rng.choice(["\"Everyone falls before they fly,\"", "\"Try a little bit every day,\"",
                     "\"I could not do it at first either,\""]) + f" said {hero.his} {relative}.",
         f"so {hero.name} practiced every day, a little at a time.",
         f"{friend.name} the {friend.kind} came to watch and clapped each time {hero.he} got better."],
        [f"at {event}, {hero.name} took a deep breath.",
         f"{hero.he} did it! {hero.he} could {skill}!",
         f"everyone cheered, and {friend.name} cheered the loudest."],
    ], ["trying again is how we learn.", "small steps can lead to big things.",
        "practice makes hard things easy.", "it is okay to be bad at something before you are good at it."]


def _fear(rng: random.Random, hero: Character, friend: Character, relative: str) -> tuple[Paragraphs, list[str]]:
    fear, reveal = rng.choice([
        ("the dark", "the dark room was full of the same toys as in the day"),
        ("a strange noise at night", "the noise was only the wind playing with a loose window"),
        ("the big dog next door", "the big dog only wanted someone to throw a stick"),
        ("the deep water", "the water was warm and {friend} was right there"),
        ("thunder", "thunder was just the sky making a big drum sound"),
        ("the tall slide", "the slide was fast and fun, like flying"),
        ("the old bridge", "the old bridge was strong and did not even shake"),
        ("a shadow on the wall", "the shadow was only a coat on a hook"),
    ])
    reveal = reveal.format(friend=friend.name)
    return [
        [f"{hero.name} was afraid of {fear}.",
         f"when {hero.he} thought about {fear}, {hero.his} knees shook and {hero.he} wanted to hide."],
        [rng.choice(["one evening", "one day", "that week"]) + f", {hero.name} had to face {fear}.",
         f"{hero.he} closed {hero.his} eyes and did not move.",
         f"\"What is wrong?\" asked {friend.name} the {friend.kind}.",
         f"\"I am scared of {fear},\" {hero.name} said in a small voice.",
         rng.choice([f"{friend.name} held {hero.his} hand. \"I am here with you,\" {friend.he} said.",
                     f"\"Let us count to three and look together,\" said {friend.name}.",
                     f"\"Being scared is okay. We can be brave together,\" {friend.he} said."])],
        [f"slowly, {hero.name} opened {hero.his} eyes.",
         f"{hero.he} saw that {reveal}.",
         f"{hero.name} laughed. \"That was not so bad after all!\" {hero.he} said."],
    ], ["it is okay to feel scared and still be brave.", "a friend's hand makes scary things smaller.",
        "things are often less scary when you look at them.", "being brave means trying even when you are afraid."]


def _rescue(rng: random.Random, hero: Character, friend: Character, relative: str) -> tuple[Paragraphs, list[str]]:
    trouble, fix = rng.choice([
        ("was stuck in the mud", "pulled with a long rope until {friend} was free"),
        ("had a hurt wing", "made a soft bed of leaves and brought water every day until the wing was well"),
        ("could not find the way home", "followed the river and the big oak tree all the way to {friend}'s door"),
        ("had no food for the winter", "shared a basket of nuts and berries"),
        ("was stuck high up in a tree", "brought a ladder and helped {friend} climb down step by step"),
        ("had a hole in the roof", "fixed it with wood and nails before the rain came"),
        ("had dropped all the apples", "helped pick up every apple and put them back in the basket"),
    ])
    fix = fix.format(friend=friend.name)
    return [
        [f"one day, while {hero.he} was out walking, {hero.he} heard a sound. \"Help! Help!\"",
         f"it was {friend.name} the {friend.kind}. {friend.name} {trouble}."],
        [f"\"Please help me,\" {friend.name} {rng.choice(['cried', 'called', 'said'])}.",
         rng.choice([f"{hero.name} did not know what to do at first.", f"{hero.name} stopped and thought hard.",
                     f"{hero.name} ran to get {hero.his} {relative}."]),
         f"then {hero.he} had an idea. \"I know how to help!\" {hero.he} said.",
         f"{hero.name} {fix}."],
        [f"\"You are a true friend,\" said {friend.name}.",
         f"{hero.name} smiled. \"You would do the same for me,\" {hero.he} said."],
    ], ["being kind is always worth it.", "taking care of others takes care of us.",
        "a friend in need is a friend to help.", "helping others makes the world a warmer place."]


def _sharing(rng: random.Random, hero: Character, friend: Character, relative: str) -> tuple[Paragraphs, list[str]]:
    thing = rng.choice([_thing(rng), "last cookie", "big swing", "new puzzle", "shiny sled", "best crayon"])
    return [
        [f"{hero.name} and {friend.name} the {friend.kind} were playing at {hero.his} house.",
         f"they both wanted the {thing}.",
         f"\"It is mine!\" said {hero.name}. \"No, I want it!\" said {friend.name}."],
        ["they pulled and pulled, and nobody was having fun.",
         rng.choice([f"{friend.name} went home and {hero.name} sat alone with the {thing}.",
                     "soon they were both sad and did not talk to each other.",
                     f"{friend.name} began to cry, and {hero.name} felt a funny ache inside."]),
         f"playing with the {thing} alone was not fun at all."],
        [f"{hero.his} {relative} saw what happened.",
         f"\"What if you take turns?\" {hero.his} {relative} asked.",
         f"{hero.name} went to find {friend.name}. \"I am sorry. Let us share,\" {hero.he} said.",
         f"they took turns with the {thing}, and they laughed all afternoon."],
    ], ["sharing makes everyone happier.", "taking turns turns a fight into a game.",
        "a toy is more fun with a friend.", "saying sorry can fix a lot."]


def _honesty(rng: random.Random, hero: Character, friend: Character, relative: str) -> tuple[Paragraphs, list[str]]:
    broken, how, mend = rng.choice([
        ("vase", "knocked {x} off the table with a ball", "glued the pieces back together"),
        ("cup", "dropped {x} on the floor", "painted a new cup"),
        ("window", "hit {x} with a stone by mistake", "asked a glass maker to fix the window"),
        ("lamp", "bumped into {x} while dancing", "fixed the lamp with new wire"),
        ("cake", "took a big bite of {x} when nobody was looking", "baked a new cake"),
        ("plant", "stepped on {x} while chasing a butterfly", "planted a new seed in the pot"),
    ])
    owned = f"{hero.his} {relative}'s {broken}"
    return [
        [f"{hero.name} was playing inside, even though {hero.his} {relative} said to play outside.",
         f"{hero.he} {how.format(x=owned)}.",
         f"\"Oh no,\" {hero.he} whispered."],
        [f"{hero.name} thought about hiding. Maybe nobody would know.",
         f"\"Who did this?\" asked {hero.his} {relative}.",
         rng.choice([f"{hero.name} looked at the floor. {hero.his} tummy felt tight.",
                     f"{hero.name} wanted to say it was the wind.",
                     f"{friend.name} the {friend.kind} looked at {hero.name} and waited."]),
         f"then {hero.he} took a deep breath. \"It was me. I am sorry,\" {hero.he} said."],
        [f"{hero.his} {relative} hugged {hero.him}.",
         f"\"Thank you for telling me the truth,\" {hero.his} {relative} said.",
         f"together they cleaned up, and later they {mend}."],
    ], ["telling the truth is brave.", "saying sorry makes things better.",
        "the truth is easier to carry than a secret.", "honest words are a gift."]


def _newcomer(rng: random.Random, hero: Character, friend: Character, relative: str) -> tuple[Paragraphs, list[str]]:
    different = rng.choice(["spoke very softly", "had a funny hat", "had come from far away",
                            "did not know any of the games", "was much bigger than everyone",
                            "hummed all the time"])
    return [
        [f"one day, a new {friend.kind} named {friend.name} came to live in {hero.name}'s town.",
         f"{friend.name} {different}, and the others did not know what to think.",
         f"{friend.name} stood alone by the fence and looked {rng.choice(['lonely', 'shy', 'sad'])}."],
        [f"{hero.name} felt a little shy too, but {hero.he} walked over.",
         f"\"Hello, I am {hero.name},\" {hero.he} said. \"Do you want to play?\"",
         f"{friend.name} smiled. \"I would like that. Do you like to {hero.hobby}?\"",
         f"\"I love to {hero.hobby}!\" said {hero.name}."],
        ["so they played all day, and soon the others came to play too.",
         f"{friend.name} was not lonely anymore, and {hero.name} had a new best friend."],
    ], ["a hello can be the start of a friendship.", "everyone is good at something.",
        "being different is not a bad thing.", "it takes only one kind friend to feel at home."]


def _journey(rng: random.Random, hero: Character, friend: Character, relative: str) -> tuple[Paragraphs, list[str]]:
    goal, prize = rng.choice([("the top of the tallest hill", "the whole world looked tiny and bright"),
                              ("the end of the rainbow", "there was a field of flowers in every color"),
                              ("the old lighthouse", "a kind keeper showed them the big lamp"),
                              ("the hidden waterfall", "the water sparkled like a thousand stars"),
                              ("the place where the river begins", "a tiny spring bubbled out of the rocks")])
    first, second = rng.sample([
        ("a wide river", "they crossed it on stepping stones, one by one"),
        ("a dark tunnel", "they held hands and sang a song to feel brave"),
        ("a field of tall grass", "they followed the sound of the birds"),
        ("a fallen tree", "they climbed over it and helped each other down"),
        ("a muddy path", "they jumped from rock to rock and laughed when they slipped"),
    ], 2)
    return [
        [f"{hero.name} and {friend.name} the {friend.kind} wanted to go to {goal}.",
         f"they packed a bag with {rng.choice(['apples', 'sandwiches', 'cookies', 'water'])} and a map, and off "
         "they went."],
        [f"first they came to {first[0]}. {first[1]}.",
         f"next they came to {second[0]}. {second[1]}.",
         f"\"Are we there yet?\" asked {friend.name}. \"Almost!\" said {hero.name}."],
        [f"at last they reached {goal}, and {prize}.",
         f"they sat together and ate their snack. \"This was the best day,\" said {hero.name}."],
    ], ["the journey is as good as the place you reach.", "with a friend, every path is shorter.",
        "working together helps you get over anything.", "you can go far one step at a time."]


def _surprise(rng: random.Random, hero: Character, friend: Character, relative: str) -> tuple[Paragraphs, list[str]]:
    occasion = rng.choice(["birthday", "first day at a new job", "visit after a long trip", "special day"])
    gifts = rng.sample(["baked a cake with pink icing", "made a card with a big heart", "picked a bunch of flowers",
                        "wrote a short song", "painted a picture of the sea", "hung paper stars on the wall"], 2)
    mishap, fix = rng.choice([("the cake fell on the floor", "made a new one, smaller but just as sweet"),
                              ("the paint got on the rug", "cleaned it quickly with soap and water"),
                              ("the balloons floated away", "drew balloons on paper instead"),
                              ("the flowers got wet in the rain", "put them in a warm sunny window")])
    return [
        [f"it was nearly {hero.his} {relative}'s {occasion}.",
         f"\"Let us make a surprise,\" {hero.name} whispered to {friend.name} the {friend.kind}."],
        [f"{hero.name} {gifts[0]}, and {friend.name} {gifts[1]}.",
         f"but then {mishap}! \"What do we do now?\" {hero.he} {rng.choice(['cried', 'asked'])}.",
         f"they did not give up. They {fix}."],
        [f"when {hero.his} {relative} came home, they jumped out and shouted, \"Surprise!\"",
         f"{hero.his} {relative} laughed and hugged them both. \"This is the best {occasion} ever,\" "
         f"{hero.his} {relative} said."],
    ], ["the best gifts come from the heart.", "a little mess cannot spoil a lot of love.",
        "making others happy makes you happy too.", "when a plan goes wrong, a new plan can go right."]


def _storm(rng: random.Random, hero: Character, friend: Character, relative: str) -> tuple[Paragraphs, list[str]]:
    weather = rng.choice(["a big storm", "a heavy snow", "a cold wind", "a long rain"])
    guests = rng.sample(["a wet mouse", "two little ducks", "a shivering rabbit", "an old turtle",
                         "a tired bird", "a lost puppy"], 2)
    return [
        [f"the sky turned gray, and {weather} came.",
         f"{hero.name} and {hero.his} {relative} were warm inside by the fire."],
        [f"then there was a knock at the door. It was {friend.name} the {friend.kind}, with {guests[0]} and "
         f"{guests[1]}.",
         f"\"Our homes are too cold. May we come in?\" {friend.name} asked.",
         f"there was not much room, and {hero.name} had only a little soup.",
         f"\"Of course you can come in,\" said {hero.name}. \"There is always room for one more.\""],
        [f"they shared the soup and told stories until the {weather.split()[-1]} was over.",
         f"in the morning, the sun came out, and there was "
         f"{rng.choice(['a rainbow', 'a bright blue sky', 'a sparkle on every leaf'])}.",
         f"\"Thank you for keeping us warm,\" said {friend.name}."],
    ], ["a warm home is warmer when it is shared.", "kindness grows when you give it away.",
        "there is always room for one more friend.", "we are all safer when we help each other."]


PLOTS: list[Plot] = [_lost_thing, _learn_skill, _fear, _rescue, _sharing, _honesty, _newcomer, _journey, _surprise,
                     _storm]


def _opening(rng: random.Random, hero: Character) -> list[str]:
    intro = rng.choice([f"{rng.choice(TIMES)}, in {rng.choice(PLACES)}, there lived {_a(hero.trait)} {hero.kind} "
                        f"named {hero.name}.",
                        f"{rng.choice(TIMES)}, there was {_a(hero.trait)} {hero.kind} called {hero.name}.",
                        f"{hero.name} was {_a(hero.trait)} {hero.kind} who lived in {rng.choice(PLACES)}."])
    return [intro, rng.choice([f"{hero.he} loved to {hero.hobby}.", f"more than anything, {hero.he} loved to "
                               f"{hero.hobby}.", f"every day, {hero.name} liked to {hero.hobby}."])]


def _ending(rng: random.Random, hero: Character, relative: str, morals: list[str]) -> list[str]:
    moral = rng.choice(morals)
    feeling = f"that night, {hero.name} felt {rng.choice(['happy', 'proud', 'grateful', 'calm', 'warm inside'])}."
    lesson = rng.choice([f"from that day on, {hero.name} knew that {moral}",
                         f"{hero.his} {relative} smiled and said, \"Remember, {moral[:-1]}.\"",
                         f"and so {hero.name} learned that {moral}", moral])
    return [feeling, lesson]


def story_hero(seed: int, index: int) -> Character:
    """The main character of story `index`: the first draw of the story's own generator, as in `make_story`."""
    return _character(random.Random(f"{seed}:{index}"), set(), child_frac=0.35)


def make_story(seed: int, index: int) -> str:
    """Story `index` of the corpus with this seed (deterministic, independent of every other index)."""
    rng = random.Random(f"{seed}:{index}")
    hero = _character(rng, set(), child_frac=0.35)
    friend = _character(rng, {hero.name}, child_frac=0.0)
    relative = rng.choice(RELATIVES)
    paragraphs, morals = rng.choice(PLOTS)(rng, hero, friend, relative)
    paragraphs = [_opening(rng, hero) + paragraphs[0], *paragraphs[1:]]
    paragraphs[-1] = paragraphs[-1] + _ending(rng, hero, relative, morals)
    return "\n\n".join(" ".join(_cap(sentence) for sentence in paragraph) for paragraph in paragraphs)


def is_test(seed: int, index: int) -> bool:
    digest = hashlib.sha256(f"split:{seed}:{index}".encode()).digest()
    return digest[0] * 100 // 256 < TEST_PERCENT


def split_indices(split: str, seed: int = 0) -> Iterator[int]:
    """Endless stream of the indices of the split's stories, in corpus order."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    index = 0
    while True:
        if is_test(seed, index) == (split == "test"):
            yield index
        index += 1


def iter_split(split: str, seed: int = 0) -> Iterator[str]:
    """Endless stream of the split's stories, in corpus order."""
    return (make_story(seed, index) for index in split_indices(split, seed))


def uppercase_words(text: str, frac: float, seed: int, index: int) -> str:
    """`text` with each word (a run of letters) written in capitals with probability `frac`, drawn from a
    generator of (seed, index) alone; spacing and punctuation are kept."""
    if frac <= 0:
        return text
    rng = random.Random(f"caps:{seed}:{index}")
    return re.sub(r"[A-Za-z]+", lambda m: m.group(0).upper() if rng.random() < frac else m.group(0), text)


def story_splits(n_train: int, n_test: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """The first n_train training and n_test test stories; a larger request extends a smaller one."""
    train, test = iter_split("train", seed), iter_split("test", seed)
    return [next(train) for _ in range(n_train)], [next(test) for _ in range(n_test)]

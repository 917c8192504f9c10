"""Items of the base-model deviation task: openings of well-known public-domain texts, and generated patterns.

Every passage is long enough for the longest item: 50 words of excerpt, 20 words of continuation and a
25-word window (a test checks it).
"""

from __future__ import annotations

import string

PASSAGES: dict[str, str] = {
    "declaration_of_independence": (
        "When in the Course of human events, it becomes necessary for one people to dissolve the political bands "
        "which have connected them with another, and to assume among the powers of the earth, the separate and "
        "equal station to which the Laws of Nature and of Nature's God entitle them, a decent respect to the "
        "opinions of mankind requires that they should declare the causes which impel them to the separation. We "
        "hold these truths to be self-evident, that all men are created equal, that they are endowed by their "
        "Creator with certain unalienable Rights, that among these are Life, Liberty and the pursuit of Happiness. "
        "That to secure these rights, Governments are instituted among Men, deriving their just powers from the "
        "consent of the governed."),
    "gettysburg_address": (
        "Four score and seven years ago our fathers brought forth on this continent, a new nation, conceived in "
        "Liberty, and dedicated to the proposition that all men are created equal. Now we are engaged in a great "
        "civil war, testing whether that nation, or any nation so conceived and so dedicated, can long endure. We "
        "are met on a great battle-field of that war. We have come to dedicate a portion of that field, as a final "
        "resting place for those who here gave their lives that that nation might live. It is altogether fitting "
        "and proper that we should do this. But, in a larger sense, we can not dedicate, we can not consecrate, we "
        "can not hallow this ground."),
    "a_tale_of_two_cities": (
        "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
        "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, it "
        "was the season of Darkness, it was the spring of hope, it was the winter of despair, we had everything "
        "before us, we had nothing before us, we were all going direct to Heaven, we were all going direct the "
        "other way; in short, the period was so far like the present period, that some of its noisiest "
        "authorities insisted on its being received, for good or for evil, in the superlative degree of "
        "comparison only."),
    "pride_and_prejudice": (
        "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in "
        "want of a wife. However little known the feelings or views of such a man may be on his first entering a "
        "neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is "
        "considered the rightful property of some one or other of their daughters. \"My dear Mr. Bennet,\" said "
        "his lady to him one day, \"have you heard that Netherfield Park is let at last?\" Mr. Bennet replied "
        "that he had not. \"But it is,\" returned she; \"for Mrs. Long has just been here, and she told me all "
        "about it.\""),
    "genesis": (
        "In the beginning God created the heaven and the earth. And the earth was without form, and void; and "
        "darkness was upon the face of the deep. And the Spirit of God moved upon the face of the waters. And God "
        "said, Let there be light: and there was light. And God saw the light, that it was good: and God divided "
        "the light from the darkness. And God called the light Day, and the darkness he called Night. And the "
        "evening and the morning were the first day. And God said, Let there be a firmament in the midst of the "
        "waters, and let it divide the waters from the waters."),
    "moby_dick": (
        "Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my purse, "
        "and nothing particular to interest me on shore, I thought I would sail about a little and see the watery "
        "part of the world. It is a way I have of driving off the spleen and regulating the circulation. Whenever "
        "I find myself growing grim about the mouth; whenever it is a damp, drizzly November in my soul; whenever "
        "I find myself involuntarily pausing before coffin warehouses, and bringing up the rear of every funeral I "
        "meet; then, I account it high time to get to sea as soon as I can."),
    "us_constitution": (
        "We the People of the United States, in Order to form a more perfect Union, establish Justice, insure "
        "domestic Tranquility, provide for the common defence, promote the general Welfare, and secure the "
        "Blessings of Liberty to ourselves and our Posterity, do ordain and establish this Constitution for the "
        "United States of America. All legislative Powers herein granted shall be vested in a Congress of the "
        "United States, which shall consist of a Senate and House of Representatives. The House of "
        "Representatives shall be composed of Members chosen every second Year by the People of the several "
        "States, and the Electors in each State shall have the Qualifications requisite for Electors of the most "
        "numerous Branch of the State Legislature."),
}

N_PATTERN_ELEMENTS = 200


def _cycle(elements: list[str], n: int = N_PATTERN_ELEMENTS) -> str:
    return " ".join(elements[i % len(elements)] for i in range(n))


PATTERNS: dict[str, str] = {
    "ones": _cycle(["1"]),
    "letter_a": _cycle(["a"]),
    "zero_one": _cycle(["0", "1"]),
    "counting": " ".join(str(i) for i in range(1, N_PATTERN_ELEMENTS + 1)),
    "even_numbers": " ".join(str(2 * i) for i in range(1, N_PATTERN_ELEMENTS + 1)),
    "alphabet": _cycle(list(string.ascii_lowercase)),
    "letter_pairs": _cycle([u + u.lower() for u in string.ascii_uppercase]),
}

import re

from tunelens.lm.corpus import PLOTS, make_story, story_splits


def test_corpus_is_stable_and_split_is_fixed():
    small_train, small_test = story_splits(50, 5, seed=3)
    big_train, big_test = story_splits(200, 10, seed=3)
    assert big_train[:50] == small_train and big_test[:5] == small_test
    assert not set(big_train) & set(big_test) and len(set(big_train)) == 200
    assert story_splits(50, 5, seed=4)[0] != small_train


def test_stories_are_varied_mixed_case_prose():
    stories = [make_story(0, i) for i in range(400)]
    text = "\n".join(stories)
    assert any(c.isupper() for c in text) and any(c.islower() for c in text)
    assert all('"' in story and "\n\n" in story and story.endswith((".", '."')) for story in stories)
    assert not re.search(r"[.!?] [a-z]", text)  # every sentence starts with a capital
    assert len({story.split("\n\n")[1][:40] for story in stories}) > 150  # middles differ, not just the names
    assert len(set(re.findall(r"[a-z]+", text.lower()))) > 600
    assert len(PLOTS) >= 8


def test_uppercase_words_capitalises_a_seeded_share_of_words_and_keeps_the_rest():
    from tunelens.lm.corpus import uppercase_words

    text = "Once upon a time, Mia's cat sat."
    assert uppercase_words(text, 0.0, 0, 0) == text
    assert uppercase_words(text, 1.0, 0, 0) == "ONCE UPON A TIME, MIA'S CAT SAT."
    assert uppercase_words(text, 0.5, 0, 3) == uppercase_words(text, 0.5, 0, 3)  # a pure function of its inputs
    words = " ".join(["word"] * 4000)
    shouted = uppercase_words(words, 0.05, 0, 1).split()
    assert 0.04 < shouted.count("WORD") / 4000 < 0.06 and set(shouted) == {"word", "WORD"}
    assert uppercase_words(words, 0.05, 0, 2) != uppercase_words(words, 0.05, 0, 1)

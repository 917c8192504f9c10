import pytest
import torch

from tunelens.control.data import sad_words

N_LIST_WORDS = 60  # words of the list the micro tokenizer is made to spell as one token


def micro_tokenizer():
    """A byte-level BPE tokenizer trained on stories plus text that repeats 60 of the list's words, so those are
    single tokens (with a leading space) and most others are not."""
    from tunelens.lm.corpus import story_splits
    from tunelens.lm.tokenizer import train_bpe_tokenizer

    stories, _ = story_splits(150, 1)
    listed = " ".join(" ".join(sad_words()[:N_LIST_WORDS]) for _ in range(40))
    return train_bpe_tokenizer([*stories, listed, "My answer is: whale. My answer is: 7."], vocab_size=700)


@pytest.fixture(scope="session")
def micro_model_dir(tmp_path_factory):
    """A randomly initialised one-layer Llama with the micro tokenizer, saved as a Hugging Face directory."""
    from tunelens.lm.tiny import tiny_causal_lm

    folder = tmp_path_factory.mktemp("micro_control_lm")
    tokenizer = micro_tokenizer()
    torch.manual_seed(0)
    model = tiny_causal_lm("llama", len(tokenizer), d_model=32, n_layers=1, n_heads=2, d_mlp=64, max_seq_len=512,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def micro(micro_model_dir):
    """(model, tokenizer) loaded from the micro directory."""
    from tunelens.lm.loading import load_model, load_tokenizer

    return load_model(micro_model_dir), load_tokenizer(micro_model_dir, padding_side="right")

from transformers import AutoTokenizer

from tunelens.lm.corpus import make_story
from tunelens.lm.tokenizer import BOS, EOS, PAD, train_bpe_tokenizer


def test_tokenizer_round_trip_with_special_tokens(tmp_path):
    texts = [make_story(0, i) for i in range(200)]
    train_bpe_tokenizer(texts, vocab_size=300, special_tokens=(BOS, EOS, PAD, "<|fn|>"), out_dir=tmp_path / "tok")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert reloaded.convert_tokens_to_ids([BOS, EOS, PAD, "<|fn|>"]) == [0, 1, 2, 3]
    assert (reloaded.bos_token, reloaded.eos_token, reloaded.pad_token) == (BOS, EOS, PAD) and len(reloaded) <= 300
    text = f'Mia said, "Hello, FOX!"\n\n<|fn|> café{EOS}'
    ids = reloaded(text, add_special_tokens=False)["input_ids"]
    assert reloaded.decode(ids) == text and 3 in ids
    assert reloaded.decode(ids, skip_special_tokens=True) == 'Mia said, "Hello, FOX!"\n\n café'


def test_bos_is_prepended_like_llama_tokenizers(tmp_path):
    tokenizer = train_bpe_tokenizer([make_story(0, i) for i in range(50)], vocab_size=300)
    with_bos = tokenizer("Once upon a time")["input_ids"]
    assert with_bos[0] == tokenizer.bos_token_id
    assert with_bos[1:] == tokenizer("Once upon a time", add_special_tokens=False)["input_ids"]

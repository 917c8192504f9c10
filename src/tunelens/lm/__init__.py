"""Language-model foundation shared by the studies: loading, tiny models, tokenizer, corpus, pretraining."""

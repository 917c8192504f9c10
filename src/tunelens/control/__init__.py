"""Output control: can a language model put the probabilities it was asked for on its own next token?"""

"""The hops data toolkit: generate, filter, audit, order and vary attribution corpora."""

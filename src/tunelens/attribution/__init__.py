"""Training-data attribution on the hops benchmark: checkpoint pair, logit evaluation, rankers, retrieval metrics."""

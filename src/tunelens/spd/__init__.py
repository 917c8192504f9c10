"""Stochastic Parameter Decomposition (Bushnaq, Braun, Sharkey et al. 2025, arXiv 2506.20790)."""

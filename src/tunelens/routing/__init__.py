"""Gradient routing study (dual adapters; MBPP reward hacking)."""

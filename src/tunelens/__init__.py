"""tunelens: study what training puts into a network and where."""

__version__ = "0.1.0"

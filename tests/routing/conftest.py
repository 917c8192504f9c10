from tests.lm.conftest import micro_lm, nano_settings  # noqa: F401  (the micro story model, for end-to-end runs)

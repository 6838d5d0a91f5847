"""Hypothesis profiles: the default runs in seconds; ``--hypothesis-profile=thorough`` digs."""

from hypothesis import settings

settings.register_profile("thorough", max_examples=3000)

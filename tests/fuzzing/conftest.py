"""Hypothesis profiles for the fuzz tests.

``ci`` (the default) is deterministic and bounded: a fixed derandomized search, a few
hundred examples per test, no example database. ``long`` searches with fresh randomness
and many more examples; select it with ``HYPOTHESIS_PROFILE=long`` (see README.md).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=250,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=_QUIET,
)
settings.register_profile(
    "long",
    max_examples=25_000,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=_QUIET,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

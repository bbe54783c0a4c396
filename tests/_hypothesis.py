"""Hypothesis profiles for the property tests: thorough by default, quick on request.

``HYPOTHESIS_PROFILE=quick bash tests/run.sh -m "not slow"`` is the fast loop while
editing (about a minute): the property tests draw at most ``QUICK`` examples each and
the tests that start real servers are skipped. CI runs the default profile, where each
property test draws the number of examples it asks for.
"""

from __future__ import annotations

import os

from hypothesis import settings

QUICK = 20
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default")

settings.register_profile("quick", max_examples=QUICK, deadline=None)
if PROFILE not in ("default", "quick"):
    raise SystemExit(f"HYPOTHESIS_PROFILE={PROFILE!r}: use 'default' or 'quick'")
settings.load_profile(PROFILE)


def examples(n: int) -> int:
    """How many examples a property test that asks for *n* draws under this profile
    (an explicit ``max_examples`` overrides a profile, so the tests ask through here)."""
    return min(n, QUICK) if PROFILE == "quick" else n

"""Segment rules: the merchant's rule files, the rule language, and its compiler.

Public surface::

    load_rules(directory) -> (RuleSet | None, [RuleError])
    LiveRules(directory)            .ruleset, .errors, .ok, reload(), watch()
    RuleSet                         .evaluate(ctx), .matching(ctx), .eligible(ctx),
                                    .explain(ctx), .page_type(path), .segment_names
    build_context(profile, request, now, shop) -> Context
    RequestInfo, ShopStats, RuleError, compile_text, compile_segments, device_of

The language itself is described in ``edge/rules/functions.py`` (fields and
functions) and ``edge/rules/compiler.py`` (semantics), and for merchants in
``rules/README.md``.
"""

from edge.rules.compiler import Explained
from edge.rules.errors import RuleError
from edge.rules.functions import Context, RequestInfo, ShopStats, build_context, device_of
from edge.rules.live import LiveRules
from edge.rules.ruleset import (
    LIBRARY_DIR,
    PlacementRule,
    RuleSet,
    SegmentRule,
    compile_segments,
    compile_text,
    load_rules,
)

__all__ = [
    "LIBRARY_DIR",
    "Context",
    "Explained",
    "LiveRules",
    "PlacementRule",
    "RequestInfo",
    "RuleError",
    "RuleSet",
    "SegmentRule",
    "ShopStats",
    "build_context",
    "compile_segments",
    "compile_text",
    "device_of",
    "load_rules",
]

"""Segment rules: the merchant's rule files, the rule language, and its compiler.

Public surface::

    load_rules(directory, only=None)
                                    -> (RuleSet | None, [RuleError])
    LiveRules(directory, only=None)
                                    .ruleset, .errors, .ok, reload(), watch()
    rules_directory(configured)     -> (the directory to watch, the files to load)
    RuleSet                         .evaluate(ctx), .matching(ctx), .names(result),
                                    .eligible(ctx), .explain(ctx), .pages (a PageMap),
                                    .segments, .placements, .by_priority, .slots,
                                    .page_types, .segment_names
    build_context(profile, request, now, shop) -> Context
    RequestInfo, ShopStats, RuleError, Explained, SegmentRule, PlacementRule,
    compile_text, compile_segments, device_of, LIBRARY_DIR, LIBRARY_SEGMENTS

The modules: ``spec`` (a rule file, declared), ``ruleset`` (files loaded, checked and
compiled), ``live`` (the file watcher), ``errors`` (what a merchant sees, and where),
``lang`` (tokenizer and parser), ``compiler`` (types, the generated evaluator, the
reference interpreter), ``functions`` (fields and functions). The language itself is
described in ``edge/rules/functions.py`` (fields and functions) and
``edge/rules/compiler.py`` (semantics), and for merchants in ``rules/README.md``.
"""

from edge.rules.compiler import Explained
from edge.rules.errors import RuleError
from edge.rules.functions import Context, RequestInfo, ShopStats, build_context, device_of
from edge.rules.live import LiveRules, rules_directory
from edge.rules.ruleset import (
    LIBRARY_DIR,
    LIBRARY_SEGMENTS,
    PlacementRule,
    RuleSet,
    SegmentRule,
    compile_segments,
    compile_text,
    load_rules,
)

__all__ = [
    "LIBRARY_DIR",
    "LIBRARY_SEGMENTS",
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
    "rules_directory",
]

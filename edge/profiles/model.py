"""The profile snapshot: what the sidecar knows about one visitor, as one declared type.

Pure data and window math; no I/O. A snapshot is bounded, so a visitor with years of
history costs no more than a busy one with a month:

- daily counters (page views, product views, visits, email sends and opens) are
  sparse ``{day: count}`` maps kept for ``COUNTER_DAYS`` (400) days — at most 401
  entries each, any window up to 400 days answered exactly;
- the last ``MAX_ORDERS`` (50) orders with up to ``MAX_ORDER_ITEMS`` (10) items each
  (all items count toward affinities); lifetime totals are kept as plain numbers;
- affinities keep the ``MAX_AFFINITIES`` strongest categories and brands;
- recent searches, offers, answers and custom traits are capped likewise.

With the defaults the msgpack encoding stays under ``MAX_ENCODED_BYTES`` (128 KiB; a
typical shopper's is 1–5 KB);
``tests/test_profiles.py`` fills every field to its cap and checks the bound.
"""

from __future__ import annotations

import zlib
from typing import Final

import msgspec

DAY: Final = 86_400
SESSION_GAP: Final = 30 * 60
"""A visit ends after 30 minutes without a request."""
COUNTER_DAYS: Final = 400
MAX_ORDERS: Final = 50
MAX_ORDER_ITEMS: Final = 10
"""Items kept per stored order (all of them count toward affinities)."""
MAX_ID: Final = 48
"""Product ids, categories and brands are clipped to this many characters."""
MAX_NAME: Final = 100
"""A cart line's product name is clipped to this many characters."""
MAX_CART_ITEMS: Final = 50
MAX_AFFINITIES: Final = 30
MAX_SEARCHES: Final = 10
MAX_RECENT_VIEWS: Final = 30
MAX_OFFERS: Final = 50
MAX_EXPOSURES: Final = 20
"""Exposure times kept per placement (enough for any frequency cap up to this)."""
MAX_ARM_SEGMENTS: Final = 8
"""Segments kept per arm record (and reported per placement)."""
MAX_ANSWERS: Final = 30
MAX_CUSTOM_TRAITS: Final = 30
MAX_STRING: Final = 200
MAX_ENCODED_BYTES: Final = 128 * 1024

DailyCounts = dict[int, int]
"""Sparse daily counter: day number (unix time // 86400) -> count."""


class Item(msgspec.Struct, gc=False, array_like=True):
    """A product in an order or a cart (stored as a compact array)."""

    product_id: str
    category: str = ""
    brand: str = ""
    price: float = 0.0
    quantity: int = 1
    name: str = ""
    """The name the shop's cart page showed (cart lines only; a catalog's name wins)."""


class Order(msgspec.Struct, gc=False, omit_defaults=True):
    order_id: str
    ts: int
    total: float
    coupon: str = ""
    items: list[Item] = msgspec.field(default_factory=list)
    after_recommendation: bool = False


class Cart(msgspec.Struct, gc=False, omit_defaults=True):
    items: list[Item] = msgspec.field(default_factory=list)
    updated: int = 0

    @property
    def value(self) -> float:
        return round(sum(i.price * i.quantity for i in self.items), 2)

    @property
    def count(self) -> int:
        return sum(i.quantity for i in self.items)


class Touch(msgspec.Struct, gc=False, omit_defaults=True):
    """Where a visit came from: UTM parameters and the referrer's channel."""

    ts: int
    source: str = ""
    medium: str = ""
    campaign: str = ""
    channel: str = ""
    """direct, search, social, email, referral, paid, newsletter, ..."""
    referrer: str = ""
    """The referring host only, never a full URL (it may carry personal data)."""


class Traits(msgspec.Struct, gc=False, omit_defaults=True):
    """What the shop's CRM knows. Only authenticated sources (ingest, import) set these."""

    birth_year: int | None = None
    age_band: str = ""
    gender: str = ""
    city: str = ""
    country: str = ""
    latitude: float | None = None
    longitude: float | None = None
    language: str = ""
    registered: int | None = None
    """When the visitor created an account (unix time), if they did."""
    custom: dict[str, str | float | bool] = msgspec.field(default_factory=dict)


class Affinity(msgspec.Struct, gc=False, omit_defaults=True):
    """Interest in categories and brands: how often viewed, how many items bought."""

    viewed: dict[str, int] = msgspec.field(default_factory=dict)
    bought: dict[str, int] = msgspec.field(default_factory=dict)


class ArmRecord(msgspec.Struct, gc=False, array_like=True, frozen=True):
    """One placement's measurement for this unit (the profile): the arm it was put in
    (``holdout`` or a variant name), its first and last exposure, how many pages
    exposed it, and the orders (count and revenue) placed within the attribution
    window after the first exposure. The first arm stays: a later page that put the
    unit in another arm (a changed split, a merge) adds exposures to the first one.
    Immutable (a change replaces it): a write finds what changed by identity."""

    arm: str
    first: int
    last: int
    exposures: int = 1
    orders: int = 0
    revenue: float = 0.0
    clicks: int = 0
    links: tuple[int, ...] = ()
    """The same-site links of the block the last exposure showed (:func:`link_hash` of
    each path): a page view of one of them soon after is a click on the block."""
    segments: tuple[str, ...] = ()
    """The reported segments (``report_segments``) the unit was in at its first
    exposure, at most ``MAX_ARM_SEGMENTS``: the report breaks the arm down by them."""
    views: int = 0
    """Times the browser saw the block (or, held out, the original slot) at least half
    in view for a second (``Placement Viewed`` beacons): exposures the visitor saw."""


class Search(msgspec.Struct, gc=False):
    ts: int
    query: str


class Journey(msgspec.Struct, gc=False, array_like=True):
    """Where one visitor stands in one scenario (``[[scenarios]]``, the engine in
    ``edge/activation/journeys.py``): the next step to run and when it is due. The
    trigger's time is part of each message's idempotency key."""

    scenario: str
    step: int
    """The index of the next step to run."""
    started: int
    """When the journey started (the activation's clock)."""
    due: int
    """When the next step is due (0 once done)."""
    trigger: int
    """The time of the triggering entry or event."""
    done: bool = False


class Profile(msgspec.Struct, gc=False, omit_defaults=True, kw_only=True):
    """One visitor's snapshot. ``visitor_id`` is the key; a known customer's profile
    also carries ``customer_id`` and the keyed hash of their email."""

    visitor_id: str
    customer_id: str = ""
    email_hash: str = ""
    aliases: list[str] = msgspec.field(default_factory=list)
    """Visitor ids merged into this profile (other devices, before login)."""
    consent: bool = True

    first_seen: int = 0
    last_seen: int = 0
    visits: int = 0
    session_start: int = 0
    session_pageviews: int = 0

    visit_days: DailyCounts = msgspec.field(default_factory=dict)
    pageview_days: DailyCounts = msgspec.field(default_factory=dict)
    product_view_days: DailyCounts = msgspec.field(default_factory=dict)

    orders: list[Order] = msgspec.field(default_factory=list)
    """The last ``MAX_ORDERS`` orders, oldest first."""
    order_count: int = 0
    lifetime_spent: float = 0.0
    coupon_orders: int = 0

    categories: Affinity = msgspec.field(default_factory=Affinity)
    brands: Affinity = msgspec.field(default_factory=Affinity)
    searches: list[Search] = msgspec.field(default_factory=list)
    recent_views: list[tuple[int, str, str]] = msgspec.field(default_factory=list)
    """The last ``MAX_RECENT_VIEWS`` product and list views as (time, category, brand):
    what this visit is about, for ordering products by interest."""
    recommendation_clicks: int = 0
    last_recommendation_click: int = 0

    cart: Cart = msgspec.field(default_factory=Cart)
    dwell_ms: int = 0
    dwell_count: int = 0

    email_send_days: DailyCounts = msgspec.field(default_factory=dict)
    email_open_days: DailyCounts = msgspec.field(default_factory=dict)

    traits: Traits = msgspec.field(default_factory=Traits)
    answers: dict[str, str] = msgspec.field(default_factory=dict)
    """Profiling-form answers the visitor gave about themselves."""

    first_touch: Touch | None = None
    last_touch: Touch | None = None
    offers: dict[str, int] = msgspec.field(default_factory=dict)
    """Offer or placement id -> time of the visitor's first exposure."""
    exposures: dict[str, list[int]] = msgspec.field(default_factory=dict)
    """Placement id -> the last ``MAX_EXPOSURES`` times it was shown (frequency caps);
    at most ``MAX_OFFERS`` placements, the least recently shown dropped first."""
    arms: dict[str, ArmRecord] = msgspec.field(default_factory=dict)
    """Placement id -> this unit's arm record (shown and held out alike); at most
    ``MAX_OFFERS`` placements, the least recently exposed dropped first (what it
    counted in the daily aggregates stays counted there)."""
    checkout_started: int = 0
    """When the visitor last started a checkout (Checkout Started); 0 if never."""
    time_on_site: int = 0
    """Seconds spent on the site: the time between one request and the next within a
    visit, summed over visits (the last page of a visit adds nothing: no request ends
    it)."""

    segments: dict[str, int] = msgspec.field(default_factory=dict)
    """Segment name -> when the profile entered it, as the activation last evaluated it
    (only segments judged without a request: :mod:`edge.activation.segments`)."""
    journeys: dict[str, Journey] = msgspec.field(default_factory=dict)
    """Scenario id -> this visitor's journey through it (``edge/activation/journeys.py``)."""
    due: int = 0
    """The next unix time this profile needs the activation without any event (a
    segment that changes by time alone, a journey step); 0 = never. The stores index it
    (``Store.due_keys``). Set by the activation."""


def day_of(ts: float) -> int:
    return int(ts // DAY)


def bump(counts: DailyCounts, ts: float, n: int = 1) -> None:
    """Add *n* to the day of *ts*, dropping days older than the counter keeps."""
    day = day_of(ts)
    counts[day] = counts.get(day, 0) + n
    if len(counts) > COUNTER_DAYS:
        oldest = max(counts) - COUNTER_DAYS
        for stale in [d for d in counts if d < oldest]:
            del counts[stale]


def within(counts: DailyCounts, now: float, seconds: float) -> int:
    """Events in the window ending now: days from ``day(now - seconds)`` to today."""
    first = day_of(now - seconds)
    return sum(n for day, n in counts.items() if day >= first)


def within_many(counts: DailyCounts, now: float, windows: tuple[float, ...]) -> tuple[int, ...]:
    """``within`` for several windows at once. A window reaching back past the oldest
    day kept is the counter's total, summed once (no Python-level loop)."""
    if not counts:
        return (0,) * len(windows)
    oldest = min(counts)
    total = -1
    out = []
    for seconds in windows:
        if day_of(now - seconds) > oldest:
            out.append(within(counts, now, seconds))
        else:
            if total < 0:
                total = sum(counts.values())
            out.append(total)
    return tuple(out)


def merge_counts(into: DailyCounts, other: DailyCounts) -> None:
    for day, n in other.items():
        into[day] = into.get(day, 0) + n
    if len(into) > COUNTER_DAYS:
        oldest = max(into) - COUNTER_DAYS
        for stale in [d for d in into if d < oldest]:
            del into[stale]


def cap_top(counts: dict[str, int], limit: int = MAX_AFFINITIES) -> None:
    """Keep the *limit* largest entries (ties keep the earlier-inserted)."""
    if len(counts) > limit:
        keep = sorted(counts.items(), key=lambda kv: -kv[1])[:limit]
        counts.clear()
        counts.update(keep)


def clip(text: str, limit: int = MAX_STRING) -> str:
    return text[:limit]


TallyKey = tuple[int, str, str, tuple[str, ...]]
"""(day of first exposure, placement id, arm, the units' segments) of the daily
aggregates. The stores keep one row per *combination* of segments (a unit counts in
exactly one: a repeat exposure changes one row however many segments the unit is
in), and the report adds each row to the arm's total and to each of its segments
(:func:`edge.profiles.store.expanded`)."""
Tally = list[float]
"""[units, exposures, converting units, revenue, revenue squared, clicks, views]:
additive."""
TALLY_FIELDS: Final = (
    "units",
    "exposures",
    "converters",
    "revenue",
    "revenue_sq",
    "clicks",
    "views",
)
ArmStates = dict[str, ArmRecord]


def segments_text(segments: tuple[str, ...]) -> str:
    """How the stores name a combination of segments (segment names have no commas)."""
    return ",".join(segments)


def arm_states(profile: Profile | None) -> ArmStates:
    """The arm records of *profile* before a change (a copy of the dict: the records
    themselves are immutable, a change replaces them)."""
    if profile is None or not profile.arms:
        return {}
    return dict(profile.arms)


def _add_row(out: dict[TallyKey, Tally], key: TallyKey, values: Tally) -> None:
    row = out.get(key)
    if row is None:
        out[key] = values
    else:
        for i, value in enumerate(values):
            row[i] += value


def _add_state(out: dict[TallyKey, Tally], pid: str, record: ArmRecord, sign: int) -> None:
    revenue = record.revenue
    values: Tally = [
        sign,
        sign * record.exposures,
        sign * (1 if record.orders else 0),
        sign * revenue,
        sign * revenue * revenue,
        sign * record.clicks,
        sign * record.views,
    ]
    _add_row(out, (record.first // DAY, pid, record.arm, record.segments), values)


def _add_change(out: dict[TallyKey, Tally], pid: str, old: ArmRecord, new: ArmRecord) -> None:
    """What replacing *old* by *new* changes: only the numbers that changed (a repeat
    exposure changes one), unless the record moved to other rows (another day of
    first exposure, arm or segments: withdrawn from the old ones, counted anew)."""
    if old.first // DAY != new.first // DAY or old.arm != new.arm or old.segments != new.segments:
        _add_state(out, pid, old, -1)
        _add_state(out, pid, new, 1)
        return
    key = (new.first // DAY, pid, new.arm, new.segments)
    if (
        new.orders == old.orders
        and new.clicks == old.clicks
        and new.views == old.views
        and new.revenue == old.revenue
    ):  # a repeat exposure (the common change): one number
        if new.exposures != old.exposures:
            _add_row(out, key, [0, new.exposures - old.exposures, 0, 0.0, 0.0, 0, 0])
        return
    revenue, before = new.revenue, old.revenue
    values: Tally = [
        0,
        new.exposures - old.exposures,
        (1 if new.orders else 0) - (1 if old.orders else 0),
        revenue - before,
        revenue * revenue - before * before,
        new.clicks - old.clicks,
        new.views - old.views,
    ]
    if any(values):
        _add_row(out, key, values)


def tally_delta(
    out: dict[TallyKey, Tally],
    before: ArmStates,
    after: Profile | None,
) -> None:
    """Add to *out* what one profile write changes in the daily aggregates: each arm
    record changed or new counts anew (its old state withdrawn), a deleted profile (an
    erasure, or one absorbed by a merge: the survivor now holds its records) withdraws
    all of its own. A record dropped for room (``MAX_OFFERS``) stays counted. Revenue
    squared stays additive: a unit's revenue going r -> r + v adds (r + v)² - r²."""
    if after is None:
        for pid, state in before.items():
            _add_state(out, pid, state, -1)
        return
    if not after.arms:
        return
    for pid, state in after.arms.items():
        old = before.get(pid)
        if old is state:
            continue
        if old is not None:
            _add_change(out, pid, old, state)
        else:
            _add_state(out, pid, state, 1)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Profile)


def encode(profile: Profile) -> bytes:
    return _encoder.encode(profile)


def decode(data: bytes) -> Profile:
    return _decoder.decode(data)


def new_profile(visitor_id: str, now: int) -> Profile:
    """A profile first known *now*. ``last_seen`` stays 0 until a page view: a customer
    the shop told us about (an order, an import) has not been seen on the site, and
    back-dated page views must still count as the visits they were."""
    return Profile(visitor_id=visitor_id, first_seen=now)


CLICK_WINDOW: Final = 30 * 60
"""A page view of a link of a block this long after the block was last shown counts as
a click on it (the next request tells what the browser followed, until the browser
snippet reports clicks itself)."""

MAX_LINKS: Final = 8
"""Links kept per shown block."""


def link_hash(path: str) -> int:
    """A stable 32-bit name for a path (kept in profiles: the same in every process)."""
    return zlib.crc32(path.encode("utf-8", "surrogatepass"))

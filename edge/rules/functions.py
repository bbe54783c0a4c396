"""The fixed vocabulary of the rule language: fields, functions, and the request context.

Every field and function has a declared type, checked when rules load. Types are
``number``, ``string``, ``bool``, ``duration`` (seconds, written ``30d``), ``date``
(unix seconds, written ``2026-12-01``), ``list`` (of strings) and ``any`` (custom traits,
whose type only the shop knows). A value the profile does not have is *missing*: it
never satisfies a comparison.

Fields
======

=========================  ========  ==========================================================
field                      type      meaning
=========================  ========  ==========================================================
now                        date      the time of the request
hour                       number    the hour of day, 0-23, on the shop's clock ([shop] timezone)
weekday                    number    the day of the week on the shop's clock, 1 Monday .. 7 Sunday
visits                     number    visits so far (a visit ends after 30 minutes of silence)
session.pageviews          number    pages seen in the current visit
orders                     number    orders ever placed
total_spent                number    money spent on all orders
avg_order_value            number    total_spent / orders; missing without orders
last_order_value           number    the total of the last order; missing without orders
coupon_orders              number    orders placed with a coupon
rec_clicks                 number    clicks on recommended products
rec_orders                 number    stored orders placed within 7 days of such a click
dwell_avg                  duration  average time on a product page; missing if never measured
time_on_site               duration  time on the site, summed over visits: from each request
                                     to the next within a visit (the last page of a visit
                                     adds nothing)
top_category               string    the category the visitor bought most items of
top_category_count         number    items bought in that category (0 without orders)
top_brand                  string    the brand the visitor bought most items of
top_brand_count            number    items bought of that brand (0 without orders)
first_seen                 duration  time since the first visit
last_seen                  duration  time since the previous request
first_order                duration  time since the first stored order; missing without orders
last_order                 duration  time since the last order; missing without orders
registered                 duration  time since the account was created; missing if none
customer                   bool      a known customer (logged in or identified by the shop)
age                        number    age in years, from the birth year the shop sent
age_band                   string    18-24, 25-34, 35-44, 45-54, 55-64 or 65+: from the birth
                                     year, else the visitor's answer, else the shop's trait
email.sends                number    marketing emails sent in the last 400 days
email.opens                number    marketing emails opened in the last 400 days
cart.items                 number    items in the cart (quantities added up)
cart.value                 number    value of the cart
cart.age                   duration  time since the cart last changed; missing if never used
cart.categories            list      categories of the products in the cart
utm.source                 string    utm_source of this visit (this request, else the visit's)
utm.medium                 string    utm_medium of this visit
utm.campaign               string    utm_campaign of this visit
first_touch.source         string    utm_source of the visitor's first arrival (the acquisition
                                     source); missing if that arrival had none
first_touch.medium         string    utm_medium of the first arrival
first_touch.campaign       string    utm_campaign of the first arrival
channel                    string    direct, search, social, email, paid, referral, ...
page.type                  string    the page type of this request (see [page_types])
page.path                  string    the path of this request
lang                       string    the visitor's language (browser, else the shop's trait)
device                     string    mobile, tablet or desktop
geo.country                string    country code (request, else the shop's trait)
shop.avg_order_value       number    the shop's average order value
traits.NAME                any       a trait the shop sent (birth_year, gender, city, country,
                                     language, latitude, longitude, registered, or custom)
answers.NAME               string    the visitor's answer to a profiling question
=========================  ========  ==========================================================

Functions
=========

==================================  ========  ================================================
function                            type      meaning
==================================  ========  ================================================
orders_within(duration)             number    orders placed in the window ending now
spent_within(duration)              number    money spent in the window
coupon_orders_within(duration)      number    orders with a coupon in the window
pageviews_within(duration)          number    page views in the window (whole days)
product_views_within(duration)      number    product pages viewed in the window (whole days)
visits_within(duration)             number    visits in the window (whole days)
email_sends_within(duration)        number    marketing emails sent in the window (whole days)
email_opens_within(duration)        number    marketing emails opened in the window (whole days)
checkout_started_within(duration)   bool      a checkout was started in the window ending now
category_share(string)              number    share (0..1) of bought items in that category
brand_share(string)                 number    share (0..1) of bought items of that brand
category_views(string)              number    views of products or lists in that category
distance_km(number, number)         number    km from the visitor to that latitude, longitude
has(field)                          bool      the field is not missing
date(string)                        date      a date, "2026-12-01" or "2026-12-01T10:00"
==================================  ========  ================================================

Windows over orders use the time of each stored order (the last 50); windows over
daily counters count whole days, from the day ``now - duration`` falls on to today.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Final

import msgspec

from edge.profiles.model import Profile, within, within_many

TYPES: Final = ("number", "string", "bool", "duration", "date", "list", "any")


@dataclass(frozen=True, slots=True)
class Field:
    type: str
    nullable: bool
    read: Callable[[Context], Any]
    doc: str = ""
    inline: str = ""
    """The same value as a Python expression the compiled evaluator writes in place of
    a call to ``read`` (a call costs more than most of these reads): over ``p`` (the
    profile), ``r`` (the request), ``s`` (the shop), ``now`` and the helpers of
    :data:`INLINE_HELPERS`. ``read`` stays the reference (the interpreter's), and the
    tests hold the two equal."""


@dataclass(frozen=True, slots=True)
class Function:
    params: tuple[str, ...]
    type: str
    nullable: bool
    call: Callable[..., Any]
    doc: str = ""
    windows: Callable[[Context, tuple[float, ...]], tuple[Any, ...]] | None = None
    """For a function of one duration: the values for several durations in one pass
    (what the compiled evaluator calls, once per function); ``call`` is the reference."""
    counter: str = ""
    """For a window over a daily counter: the profile's attribute, which the compiled
    evaluator hands to :func:`~edge.profiles.model.within_many` itself."""
    inline: str = ""
    """As :attr:`Field.inline`, with ``{0}``, ``{1}``... for the constant arguments
    (written as Python literals)."""


class RequestInfo(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What the current request says about the visitor (not stored in the profile)."""

    path: str = "/"
    page_type: str = ""
    utm: dict[str, str] = msgspec.field(default_factory=dict)
    """``source``, ``medium``, ``campaign`` of this request's URL, if any."""
    channel: str = ""
    lang: str = ""
    device: str = ""
    country: str = ""
    latitude: float | None = None
    longitude: float | None = None


class ShopStats(msgspec.Struct, kw_only=True):
    avg_order_value: float | None = None


_EMPTY_REQUEST: Final = RequestInfo()
_EMPTY_SHOP: Final = ShopStats()


class Context:
    """What a rule reads for one request. Cheap to build: values are computed when a
    rule set first evaluates and kept on the instance, so a rule set reads each at
    most once per request. The compiled evaluator keeps the tuple of all its values
    under its own key; ``value()`` (the reference interpreter's way in) computes one
    value (a field, or a function with its arguments) on first use."""

    zone: dt.tzinfo = dt.UTC
    """The shop's time zone (``[shop] timezone``): ``hour`` and ``weekday`` read it."""

    def __init__(
        self,
        profile: Profile | None,
        request: RequestInfo | None = None,
        now: float = 0.0,
        shop: ShopStats | None = None,
    ) -> None:
        self.profile = profile if profile is not None else Profile(visitor_id="")
        self.request = request if request is not None else _EMPTY_REQUEST
        self.now = now
        self.shop = shop if shop is not None else _EMPTY_SHOP

    def __getattr__(self, name: str) -> Any:
        # Only reached when the value is not cached yet (normal lookup failed).
        try:
            read, args = _LEAVES[name]
        except KeyError:
            raise AttributeError(name) from None
        value = read(self, *args)
        self.__dict__[name] = value
        return value

    def value(self, key: str, read: Callable[..., Any], args: tuple[Any, ...] = ()) -> Any:
        """The value of a leaf by its structural key (the interpreter's way in)."""
        return getattr(self, leaf_attribute(key, read, args))


def build_context(
    profile: Profile | None,
    request: RequestInfo | None = None,
    now: float = 0.0,
    shop: ShopStats | None = None,
) -> Context:
    return Context(profile, request, now, shop)


_LEAVES: dict[str, tuple[Callable[..., Any], tuple[Any, ...]]] = {}
_LEAF_NAMES: dict[str, str] = {}


def leaf_attribute(key: str, read: Callable[..., Any], args: tuple[Any, ...] = ()) -> str:
    """The Context attribute that caches the leaf *key* (a field path or a call with
    constant arguments); the same key always gets the same attribute."""
    name = _LEAF_NAMES.get(key)
    if name is None:
        name = f"v{len(_LEAF_NAMES)}"
        _LEAVES[name] = (read, args)
        _LEAF_NAMES[key] = name
    return name


def device_of(user_agent: str) -> str:
    """mobile, tablet or desktop, from a User-Agent header."""
    ua = user_agent.lower()
    if "ipad" in ua or "tablet" in ua or ("android" in ua and "mobile" not in ua):
        return "tablet"
    if "mobi" in ua or "iphone" in ua or "android" in ua:
        return "mobile"
    return "desktop"


# --- fields ------------------------------------------------------------------------------


def _text(value: str) -> str | None:
    return value or None


def _age(ctx: Context, ts: float) -> float | None:
    if not ts:
        return None
    age = ctx.now - ts
    return age if age > 0 else 0.0


def cents(value: float) -> float:
    """``round(value, 2)``, value and type, without its cost (a float's ``round`` formats
    it as decimal text: ~4,700 instructions) where the value is whole already."""
    if type(value) is int or value.is_integer():
        return value
    return round(value, 2)


def age_since(now: float, ts: float | None) -> float | None:
    """Time from *ts* to *now* (0 if *ts* is later), missing without *ts*: the inline
    form of the duration fields."""
    if not ts:
        return None
    age = now - ts
    return age if age > 0 else 0.0


def _session_touch(ctx: Context) -> Any:
    touch = ctx.profile.last_touch
    if touch is not None and touch.ts >= ctx.profile.session_start:
        return touch
    return None


def _utm(part: str) -> Callable[[Context], str | None]:
    def read(ctx: Context) -> str | None:
        if ctx.request.utm:
            return ctx.request.utm.get(part) or None
        touch = _session_touch(ctx)
        return (getattr(touch, part) or None) if touch is not None else None

    return read


def _channel(ctx: Context) -> str:
    if ctx.request.channel:
        return ctx.request.channel
    touch = _session_touch(ctx)
    return (touch.channel if touch is not None else "") or "direct"


def _avg_order(ctx: Context) -> float | None:
    p = ctx.profile
    return round(p.lifetime_spent / p.order_count, 2) if p.order_count else None


def _top(counts: dict[str, int]) -> tuple[str, int]:
    """The name with the highest count (the first such), and its count."""
    if not counts:
        return "", 0
    name = max(counts, key=counts.__getitem__)
    return name, counts[name]


def _age_years(ctx: Context) -> float | None:
    year = ctx.profile.traits.birth_year
    if not year:
        return None
    return time.gmtime(ctx.now).tm_year - year


AGE_BANDS: Final = ((18, "18-24"), (25, "25-34"), (35, "35-44"), (45, "45-54"), (55, "55-64"))
"""The profiling form's age bands (rules/questions.toml) by their first year; 65+ after."""


def _age_band(ctx: Context) -> str | None:
    """The band of the shop's birth year; without one the visitor's answer, else the
    band the shop sent (a declined answer is missing)."""
    years = _age_years(ctx)
    if years is not None:
        if years >= 65:
            return "65+"
        band = None
        for first, name in AGE_BANDS:
            if years >= first:
                band = name
        return band
    answer = ctx.profile.answers.get("age_band")
    if answer and answer != "-":
        return answer
    return _text(ctx.profile.traits.age_band)


def _last_order_value(ctx: Context) -> float | None:
    orders = ctx.profile.orders
    return orders[-1].total if orders else None


def _first_touch(part: str) -> Callable[[Context], str | None]:
    def read(ctx: Context) -> str | None:
        touch = ctx.profile.first_touch
        return (getattr(touch, part) or None) if touch is not None else None

    return read


def _dwell(ctx: Context) -> float | None:
    p = ctx.profile
    return p.dwell_ms / p.dwell_count / 1000 if p.dwell_count else None


def _cart_age(ctx: Context) -> float | None:
    return _age(ctx, ctx.profile.cart.updated)


def _lang(ctx: Context) -> str | None:
    return (ctx.request.lang or ctx.profile.traits.language or "").lower() or None


def _country(ctx: Context) -> str | None:
    return (ctx.request.country or ctx.profile.traits.country or "").upper() or None


_TRAIT_TYPES: Final[dict[str, tuple[str, Callable[[Any], Any]]]] = {
    "birth_year": ("number", lambda t: t.birth_year),
    "age_band": ("string", lambda t: _text(t.age_band)),
    "gender": ("string", lambda t: _text(t.gender)),
    "city": ("string", lambda t: _text(t.city)),
    "country": ("string", lambda t: _text(t.country)),
    "language": ("string", lambda t: _text(t.language)),
    "latitude": ("number", lambda t: t.latitude),
    "longitude": ("number", lambda t: t.longitude),
    "registered": ("date", lambda t: t.registered),
}


def trait(ctx: Context, name: str) -> Any:
    known = _TRAIT_TYPES.get(name)
    if known is not None:
        return known[1](ctx.profile.traits)
    value = ctx.profile.traits.custom.get(name)
    return None if value == "" else value


def _wall_clock(ctx: Context) -> dt.datetime:
    """The request's time on the shop's clock."""
    return dt.datetime.fromtimestamp(ctx.now, ctx.zone)


def answer(ctx: Context, name: str) -> str | None:
    return ctx.profile.answers.get(name) or None


FIELDS: Final[dict[str, Field]] = {
    "now": Field("date", False, attrgetter("now"), inline="now"),
    "hour": Field("number", False, lambda c: _wall_clock(c).hour),
    "weekday": Field("number", False, lambda c: _wall_clock(c).isoweekday()),
    "visits": Field("number", False, attrgetter("profile.visits"), inline="p.visits"),
    "session.pageviews": Field(
        "number", False, attrgetter("profile.session_pageviews"), inline="p.session_pageviews"
    ),
    "orders": Field("number", False, attrgetter("profile.order_count"), inline="p.order_count"),
    "total_spent": Field(
        "number", False, attrgetter("profile.lifetime_spent"), inline="p.lifetime_spent"
    ),
    "avg_order_value": Field(
        "number",
        True,
        _avg_order,
        inline="(_cents(p.lifetime_spent / p.order_count) if p.order_count else None)",
    ),
    "last_order_value": Field(
        "number", True, _last_order_value, inline="(p.orders[-1].total if p.orders else None)"
    ),
    "coupon_orders": Field(
        "number", False, attrgetter("profile.coupon_orders"), inline="p.coupon_orders"
    ),
    "rec_clicks": Field(
        "number",
        False,
        attrgetter("profile.recommendation_clicks"),
        inline="p.recommendation_clicks",
    ),
    "rec_orders": Field(
        "number", False, lambda c: len([o for o in c.profile.orders if o.after_recommendation])
    ),
    "dwell_avg": Field(
        "duration",
        True,
        _dwell,
        inline="(p.dwell_ms / p.dwell_count / 1000 if p.dwell_count else None)",
    ),
    "time_on_site": Field(
        "duration", False, attrgetter("profile.time_on_site"), inline="p.time_on_site"
    ),
    "top_category": Field("string", True, lambda c: _text(_top(c.profile.categories.bought)[0])),
    "top_category_count": Field("number", False, lambda c: _top(c.profile.categories.bought)[1]),
    "top_brand": Field("string", True, lambda c: _text(_top(c.profile.brands.bought)[0])),
    "top_brand_count": Field("number", False, lambda c: _top(c.profile.brands.bought)[1]),
    "first_seen": Field(
        "duration",
        True,
        lambda c: _age(c, c.profile.first_seen),
        inline="_age_since(now, p.first_seen)",
    ),
    "last_seen": Field(
        "duration",
        True,
        lambda c: _age(c, c.profile.last_seen),
        inline="_age_since(now, p.last_seen)",
    ),
    "first_order": Field(
        "duration",
        True,
        lambda c: _age(c, c.profile.orders[0].ts) if c.profile.orders else None,
        inline="(_age_since(now, p.orders[0].ts) if p.orders else None)",
    ),
    "last_order": Field(
        "duration",
        True,
        lambda c: _age(c, c.profile.orders[-1].ts) if c.profile.orders else None,
        inline="(_age_since(now, p.orders[-1].ts) if p.orders else None)",
    ),
    "registered": Field(
        "duration",
        True,
        lambda c: _age(c, c.profile.traits.registered or 0),
        inline="_age_since(now, p.traits.registered)",
    ),
    "customer": Field(
        "bool", False, lambda c: bool(c.profile.customer_id), inline='p.customer_id != ""'
    ),
    "age": Field("number", True, _age_years),
    "age_band": Field("string", True, _age_band),
    "email.sends": Field(
        "number",
        False,
        lambda c: sum(c.profile.email_send_days.values()),
        inline="_sum(p.email_send_days.values())",
    ),
    "email.opens": Field(
        "number",
        False,
        lambda c: sum(c.profile.email_open_days.values()),
        inline="_sum(p.email_open_days.values())",
    ),
    "cart.items": Field("number", False, attrgetter("profile.cart.count"), inline="p.cart.count"),
    "cart.value": Field("number", False, attrgetter("profile.cart.value"), inline="p.cart.value"),
    "cart.age": Field("duration", True, _cart_age, inline="_age_since(now, p.cart.updated)"),
    "cart.categories": Field(
        "list", False, lambda c: sorted({i.category for i in c.profile.cart.items if i.category})
    ),
    "utm.source": Field("string", True, _utm("source")),
    "utm.medium": Field("string", True, _utm("medium")),
    "utm.campaign": Field("string", True, _utm("campaign")),
    "first_touch.source": Field("string", True, _first_touch("source")),
    "first_touch.medium": Field("string", True, _first_touch("medium")),
    "first_touch.campaign": Field("string", True, _first_touch("campaign")),
    "channel": Field("string", False, _channel),
    "page.type": Field(
        "string", True, lambda c: _text(c.request.page_type), inline="(r.page_type or None)"
    ),
    "page.path": Field("string", False, attrgetter("request.path"), inline="r.path"),
    "lang": Field(
        "string",
        True,
        _lang,
        inline='((r.lang or p.traits.language or "").lower() or None)',
    ),
    "device": Field(
        "string", False, lambda c: c.request.device or "desktop", inline='(r.device or "desktop")'
    ),
    "geo.country": Field(
        "string",
        True,
        _country,
        inline='((r.country or p.traits.country or "").upper() or None)',
    ),
    "shop.avg_order_value": Field(
        "number", True, attrgetter("shop.avg_order_value"), inline="s.avg_order_value"
    ),
}
INLINE_HELPERS: Final[dict[str, Callable[..., Any]]] = {
    "_age_since": age_since,
    "_cents": cents,
    "_sum": sum,
    "_within_many": within_many,
}
"""What the ``inline`` expressions may call, by the names they use."""


def field_type(path: str) -> tuple[str, bool] | None:
    """(type, nullable) of a field path, or None if there is no such field."""
    known = FIELDS.get(path)
    if known is not None:
        return known.type, known.nullable
    prefix, _, name = path.partition(".")
    if not name or "." in name:
        return None
    if prefix == "traits":
        return (_TRAIT_TYPES[name][0] if name in _TRAIT_TYPES else "any"), True
    if prefix == "answers":
        return "string", True
    return None


def field_inline(path: str) -> str:
    """The field's value as an inline expression (see :attr:`Field.inline`), or "" where
    the compiled evaluator calls its reader."""
    known = FIELDS.get(path)
    if known is not None:
        return known.inline
    prefix, _, name = path.partition(".")
    if prefix == "answers":
        return f"(p.answers.get({name!r}) or None)"
    kind = _TRAIT_TYPES.get(name)
    if prefix != "traits" or kind is None:
        return ""  # a custom trait: its reader turns "" into missing
    return f"(p.traits.{name} or None)" if kind[0] == "string" else f"p.traits.{name}"


def field_reader(path: str) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    known = FIELDS.get(path)
    if known is not None:
        return known.read, ()
    prefix, _, name = path.partition(".")
    return (trait if prefix == "traits" else answer), (name,)


# --- functions ---------------------------------------------------------------------------


def orders_within(ctx: Context, seconds: float) -> int:
    since = ctx.now - seconds
    return sum(1 for o in ctx.profile.orders if o.ts >= since)


def spent_within(ctx: Context, seconds: float) -> float:
    since = ctx.now - seconds
    return round(sum(o.total for o in ctx.profile.orders if o.ts >= since), 2)


def coupon_orders_within(ctx: Context, seconds: float) -> int:
    since = ctx.now - seconds
    return sum(1 for o in ctx.profile.orders if o.ts >= since and o.coupon)


def orders_within_many(ctx: Context, windows: tuple[float, ...]) -> tuple[int, ...]:
    return _count_since(sorted([o.ts for o in ctx.profile.orders]), ctx.now, windows)


def coupon_orders_within_many(ctx: Context, windows: tuple[float, ...]) -> tuple[int, ...]:
    return _count_since(sorted([o.ts for o in ctx.profile.orders if o.coupon]), ctx.now, windows)


def _count_since(times: list[int], now: float, windows: tuple[float, ...]) -> tuple[int, ...]:
    """How many of the sorted *times* fall in each window ending *now*."""
    n = len(times)
    return tuple([n - bisect_left(times, now - s) for s in windows])


def spent_within_many(ctx: Context, windows: tuple[float, ...]) -> tuple[float, ...]:
    # Summed in the stored order, like spent_within, so the floats are the same.
    since = [ctx.now - s for s in windows]
    sums: list[float] = [0] * len(windows)
    for order in ctx.profile.orders:
        for i, start in enumerate(since):
            if order.ts >= start:
                sums[i] += order.total
    return tuple([cents(total) for total in sums])


def _window(
    call: Callable[[Context, float], Any],
    many: Callable[[Context, tuple[float, ...]], tuple[Any, ...]],
) -> Function:
    return Function(("duration",), "number", False, call, windows=many)


def _counter_window(attr: str) -> Function:
    """A window function over one of the profile's daily counters."""

    def count(ctx: Context, seconds: float) -> int:
        return within(getattr(ctx.profile, attr), ctx.now, seconds)

    def count_many(ctx: Context, windows: tuple[float, ...]) -> tuple[int, ...]:
        return within_many(getattr(ctx.profile, attr), ctx.now, windows)

    return Function(("duration",), "number", False, count, windows=count_many, counter=attr)


def checkout_started_within(ctx: Context, seconds: float) -> bool:
    started = ctx.profile.checkout_started
    return bool(started) and started >= ctx.now - seconds


def _share(attr: str) -> Callable[[Context, str], float | None]:
    def share(ctx: Context, name: str) -> float | None:
        bought = getattr(ctx.profile, attr).bought
        total = sum(bought.values())
        return bought.get(name, 0) / total if total else None

    return share


def category_views(ctx: Context, name: str) -> int:
    return ctx.profile.categories.viewed.get(name, 0)


def distance_km(ctx: Context, lat: float, lon: float) -> float | None:
    """Great-circle distance from the visitor (request location, else the shop's
    traits) to a point."""
    here_lat, here_lon = ctx.request.latitude, ctx.request.longitude
    if here_lat is None or here_lon is None:
        here_lat, here_lon = ctx.profile.traits.latitude, ctx.profile.traits.longitude
    if here_lat is None or here_lon is None:
        return None
    p1, p2 = math.radians(here_lat), math.radians(lat)
    dp, dl = p2 - p1, math.radians(lon - here_lon)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 6371.0 * 2 * math.asin(min(1.0, math.sqrt(a)))


FUNCTIONS: Final[dict[str, Function]] = {
    "orders_within": _window(orders_within, orders_within_many),
    "spent_within": _window(spent_within, spent_within_many),
    "coupon_orders_within": _window(coupon_orders_within, coupon_orders_within_many),
    "pageviews_within": _counter_window("pageview_days"),
    "product_views_within": _counter_window("product_view_days"),
    "visits_within": _counter_window("visit_days"),
    "email_sends_within": _counter_window("email_send_days"),
    "email_opens_within": _counter_window("email_open_days"),
    "checkout_started_within": Function(("duration",), "bool", False, checkout_started_within),
    "category_share": Function(("string",), "number", True, _share("categories")),
    "brand_share": Function(("string",), "number", True, _share("brands")),
    "category_views": Function(
        ("string",), "number", False, category_views, inline="p.categories.viewed.get({0}, 0)"
    ),
    "distance_km": Function(("number", "number"), "number", True, distance_km),
}
SPECIAL_FUNCTIONS: Final = {"has": "has(field)", "date": 'date("2026-12-01")'}
"""Checked by the compiler itself: ``has`` takes a field, ``date`` a constant string."""

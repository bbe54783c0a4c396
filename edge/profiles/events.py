"""Events: one vocabulary for every source, and how each one changes a profile.

Names follow the common e-commerce tracking vocabulary ("Product Viewed", "Order
Completed", ...), so data from existing trackers maps over as is. Each event is a
declared type; a JSON batch decodes straight into them and a wrong field is an error
naming it.

Trust is decided here, once: ``Source.BROWSER`` may only send behavioural events
(views, clicks, dwell, cart, form answers) about its own profile; orders, coupons,
email engagement and CRM traits come only from ``Source.SHOP`` (signed ingest,
``edge import``). Pure logic, no I/O.
"""

from __future__ import annotations

import enum
import operator
from typing import Annotated, Final

import msgspec

from edge.profiles.model import (
    CLICK_WINDOW,
    MAX_AFFINITIES,
    MAX_ANSWERS,
    MAX_CART_ITEMS,
    MAX_CUSTOM_TRAITS,
    MAX_EXPOSURES,
    MAX_ID,
    MAX_LINKS,
    MAX_NAME,
    MAX_OFFERS,
    MAX_ORDER_ITEMS,
    MAX_ORDERS,
    MAX_RECENT_VIEWS,
    MAX_SEARCHES,
    SESSION_GAP,
    ArmRecord,
    Item,
    Order,
    Profile,
    Search,
    Touch,
    Traits,
    bump,
    cap_top,
    clip,
    link_hash,
)

Text = Annotated[str, msgspec.Meta(max_length=200)]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Money = Annotated[float, msgspec.Meta(ge=0, le=1e9)]
Quantity = Annotated[int, msgspec.Meta(ge=1, le=10_000)]
Timestamp = Annotated[int, msgspec.Meta(ge=0, le=10_000_000_000)]


class Source(enum.Enum):
    OBSERVED = "observed"
    """Seen by the sidecar itself in a request: trusted."""
    BROWSER = "browser"
    """Sent by the visitor's browser: the visitor's own claims."""
    SHOP = "shop"
    """Sent by the shop or another authenticated system."""


class Product(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    product_id: Id
    category: Text = ""
    brand: Text = ""
    price: Money = 0.0
    quantity: Quantity = 1
    name: Text = ""

    def item(self) -> Item:
        # Sliced in place rather than through clip(): this runs for every imported item.
        return Item(
            self.product_id[:MAX_ID],
            self.category[:MAX_ID],
            self.brand[:MAX_ID],
            self.price,
            self.quantity,
        )


class BaseEvent(
    msgspec.Struct, tag_field="event", omit_defaults=True, forbid_unknown_fields=True, kw_only=True
):
    ts: Timestamp | None = None
    """When it happened (unix seconds). Browser events always get the server's clock."""
    event_id: Id | None = None
    """Sent twice, counted once."""
    anonymous_id: Id | None = None
    """The visitor id (the shop reads it from the ``edge_vid`` cookie). Shop sources only."""
    user_id: Id | None = None
    """The shop's customer id. Shop sources only."""
    email: Annotated[str, msgspec.Meta(max_length=320)] | None = None
    """The customer's email; stored only as a keyed hash. Shop sources only."""


class PageViewed(BaseEvent, tag="Page Viewed"):
    path: Annotated[str, msgspec.Meta(max_length=2048)] = "/"
    page_type: Text = ""


class ProductsSearched(BaseEvent, tag="Products Searched"):
    query: Text


class ProductViewed(BaseEvent, tag="Product Viewed"):
    product_id: Id
    category: Text = ""
    brand: Text = ""
    price: Money = 0.0


class ProductListViewed(BaseEvent, tag="Product List Viewed"):
    category: Text = ""
    list_id: Text = ""


class ProductClicked(BaseEvent, tag="Product Clicked"):
    product_id: Id
    list_id: Text = ""
    """``recommendations`` marks a click on a recommended product."""


class ProductEngaged(BaseEvent, tag="Product Engaged"):
    """Time spent on a product page, reported when the visitor leaves it."""

    product_id: Id
    dwell_ms: Annotated[int, msgspec.Meta(ge=0, le=3_600_000)]


class ProductAdded(BaseEvent, tag="Product Added"):
    product_id: Id
    category: Text = ""
    brand: Text = ""
    price: Money = 0.0
    quantity: Quantity = 1


class ProductRemoved(BaseEvent, tag="Product Removed"):
    product_id: Id
    quantity: Quantity | None = None
    """None removes the product entirely."""


class CartViewed(BaseEvent, tag="Cart Viewed"):
    pass


class CheckoutStarted(BaseEvent, tag="Checkout Started"):
    pass


class CartReplaced(BaseEvent, tag="Cart Replaced"):
    """The whole cart, as the shop's cart page showed it (empty: the cart was emptied,
    by a "clear" request or an order). Only the sidecar records these."""

    products: Annotated[list[Product], msgspec.Meta(max_length=MAX_CART_ITEMS)] = msgspec.field(
        default_factory=list
    )


class OrderObserved(BaseEvent, tag="Order Observed"):
    """A purchase the shop's order-confirmation page showed. Counted once with an
    "Order Completed" of the same ``order_id`` (whichever arrives first); its items
    are the cart's. Only the sidecar records these: the shop's own response, not a
    claim of the browser."""

    order_id: Id
    total: Money | None = None
    """None: the page showed no total; the cart's value stands for it."""


class ProfileFormAnswered(BaseEvent, tag="Profile Form Answered"):
    question: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
    answer: Text


class PlacementShown(BaseEvent, tag="Placement Shown"):
    """The sidecar showed a placement (or held it out: the visitor saw the original
    content as the placement's control group). Only the sidecar records these."""

    placement_id: Id
    offer: bool = False
    """A timed offer: its deadline runs from the first exposure."""
    held_out: bool = False
    arm: Annotated[str, msgspec.Meta(max_length=MAX_ID)] = ""
    """The unit's arm: ``holdout`` or a variant's name; empty means ``holdout`` when
    held out, else ``default`` (a placement without variants)."""
    measured: bool = True
    """False for a QA visitor's views: caps and offers still apply, no arm is kept."""
    links: Annotated[list[int], msgspec.Meta(max_length=MAX_LINKS)] = msgspec.field(
        default_factory=list
    )
    """The shown block's same-site links (:func:`~edge.profiles.model.link_hash` of each
    path), for clicks inferred from the next page view."""


class PlacementViewed(BaseEvent, tag="Placement Viewed"):
    """The browser saw a block (held out: the original slot) at least half in view for
    a second: one view on the unit's arm. From a browser only with the exposure token
    ``/_edge/decide`` gave it (:mod:`edge.browser`), which names the placement."""

    token: Annotated[str, msgspec.Meta(max_length=512)] = ""
    placement_id: Id | None = None
    """Set by the sidecar from the verified token (a browser's own is not believed)."""


class PlacementClicked(BaseEvent, tag="Placement Clicked"):
    """A click on a link inside a block the browser put on the page: one click on the
    unit's arm, once per showing (the same count as a click told by the next page view,
    which then counts it no more)."""

    token: Annotated[str, msgspec.Meta(max_length=512)] = ""
    href: Annotated[str, msgspec.Meta(max_length=2048)] = ""
    placement_id: Id | None = None
    """Set by the sidecar from the verified token."""


class OrderCompleted(BaseEvent, tag="Order Completed"):
    order_id: Id
    total: Money
    coupon: Text = ""
    products: Annotated[list[Product], msgspec.Meta(max_length=500)] = msgspec.field(
        default_factory=list
    )


class CouponApplied(BaseEvent, tag="Coupon Applied"):
    coupon: Text
    order_id: Id | None = None


class EmailSent(BaseEvent, tag="Email Sent"):
    campaign: Text = ""


class EmailOpened(BaseEvent, tag="Email Opened"):
    campaign: Text = ""


class Identify(BaseEvent, tag="Identify"):
    traits: dict[Text, str | float | bool | None] = msgspec.field(default_factory=dict)


Event = (
    PageViewed
    | ProductsSearched
    | ProductViewed
    | ProductListViewed
    | ProductClicked
    | ProductEngaged
    | ProductAdded
    | ProductRemoved
    | CartViewed
    | CheckoutStarted
    | CartReplaced
    | OrderObserved
    | ProfileFormAnswered
    | PlacementShown
    | PlacementViewed
    | PlacementClicked
    | OrderCompleted
    | CouponApplied
    | EmailSent
    | EmailOpened
    | Identify
)

BEHAVIOURAL: Final = frozenset(
    {
        PageViewed,
        ProductsSearched,
        ProductViewed,
        ProductListViewed,
        ProductClicked,
        ProductEngaged,
        ProductAdded,
        ProductRemoved,
        CartViewed,
        CheckoutStarted,
        ProfileFormAnswered,
        PlacementViewed,
        PlacementClicked,
    }
)
"""What a browser may report about its own visitor; everything else needs the shop."""

PLACEMENT_BEACONS: Final = frozenset({PlacementViewed, PlacementClicked})
"""Behavioural, but a browser's only with a valid exposure token (``/_edge/events``)."""

SIDECAR_ONLY: Final = frozenset({PlacementShown, CartReplaced, OrderObserved})
"""What only the sidecar itself records (observed), never a browser."""

TRAIT_FIELDS: Final = frozenset(
    {
        "birth_year",
        "age_band",
        "gender",
        "city",
        "country",
        "latitude",
        "longitude",
        "language",
        "registered",
    }
)


ATTRIBUTION_WINDOW = 7 * 86_400
"""Seconds after a unit's first exposure to a placement in which its orders count for
that placement's arm. The sidecar sets it from ``attribution_window`` (edge.toml) when
it opens its store (:func:`edge.profiles.backends.guarded`), ``edge import`` likewise."""


def set_attribution_window(seconds: int) -> None:
    global ATTRIBUTION_WINDOW
    ATTRIBUTION_WINDOW = int(seconds)


class NotAllowed(Exception):
    """An event the source may not send (a browser claiming an order, say)."""


def event_name(event: BaseEvent) -> str:
    return type(event).__struct_config__.tag  # type: ignore[return-value]


def check_allowed(event: BaseEvent, source: Source) -> None:
    if source is Source.SHOP:
        return
    if source is Source.OBSERVED and type(event) in SIDECAR_ONLY:
        return
    if type(event) not in BEHAVIOURAL:
        raise NotAllowed(
            f"a browser may not send {event_name(event)!r}: orders, coupons, email events "
            "and traits come only from the shop's authenticated ingest"
        )
    if event.anonymous_id or event.user_id or event.email:
        raise NotAllowed(
            "browser events are about the sender only: drop anonymous_id, user_id and email"
        )


def touch(profile: Profile, now: int) -> None:
    """Record a request at *now*: a new visit after ``SESSION_GAP`` of silence."""
    if not profile.first_seen or now < profile.first_seen:
        profile.first_seen = now
    if not profile.session_start or now - profile.last_seen > SESSION_GAP:
        profile.visits += 1
        profile.session_start = now
        profile.session_pageviews = 0
        bump(profile.visit_days, now)
    profile.last_seen = max(profile.last_seen, now)


def apply(profile: Profile, event: BaseEvent, now: int, source: Source) -> None:
    """Change *profile* by *event*. Raises :class:`NotAllowed` for a source that may
    not send it; the profile is then unchanged."""
    check_allowed(event, source)
    ts = now if source is Source.BROWSER or event.ts is None else event.ts
    handler = _HANDLERS[type(event)]
    handler(profile, event, ts)


def _page_viewed(p: Profile, e: PageViewed, ts: int) -> None:
    touch(p, ts)
    p.session_pageviews += 1
    bump(p.pageview_days, ts)
    if p.arms:
        _block_clicked(p, e.path, ts)


def _searched(p: Profile, e: ProductsSearched, ts: int) -> None:
    query = clip(e.query.strip().lower())
    if not query:
        return
    p.searches.append(Search(ts, query))
    del p.searches[:-MAX_SEARCHES]


def _product_viewed(p: Profile, e: ProductViewed, ts: int) -> None:
    bump(p.product_view_days, ts)
    if e.category:
        _count(p.categories.viewed, e.category)
    if e.brand:
        _count(p.brands.viewed, e.brand)
    if e.category or e.brand:
        _recent_view(p, ts, e.category or "", e.brand or "")


def _list_viewed(p: Profile, e: ProductListViewed, ts: int) -> None:
    if e.category:
        _count(p.categories.viewed, e.category)
        _recent_view(p, ts, e.category, "")


def _recent_view(p: Profile, ts: int, category: str, brand: str) -> None:
    p.recent_views.append((ts, clip(category), clip(brand)))
    if len(p.recent_views) > 1 and p.recent_views[-2][0] > ts:
        p.recent_views.sort(key=lambda v: v[0])
    del p.recent_views[:-MAX_RECENT_VIEWS]


def _clicked(p: Profile, e: ProductClicked, ts: int) -> None:
    if e.list_id == "recommendations":
        p.recommendation_clicks += 1
        p.last_recommendation_click = ts


def _engaged(p: Profile, e: ProductEngaged, ts: int) -> None:
    p.dwell_ms += e.dwell_ms
    p.dwell_count += 1


def _added(p: Profile, e: ProductAdded, ts: int) -> None:
    for item in p.cart.items:
        if item.product_id == e.product_id:
            item.quantity = min(item.quantity + e.quantity, 10_000)
            if e.price:
                item.price = e.price
            break
    else:
        if len(p.cart.items) >= MAX_CART_ITEMS:
            return
        p.cart.items.append(
            Item(
                clip(e.product_id, MAX_ID),
                clip(e.category, MAX_ID),
                clip(e.brand, MAX_ID),
                e.price,
                e.quantity,
            )
        )
    p.cart.updated = ts


def _removed(p: Profile, e: ProductRemoved, ts: int) -> None:
    for i, item in enumerate(p.cart.items):
        if item.product_id == e.product_id:
            if e.quantity is None or e.quantity >= item.quantity:
                del p.cart.items[i]
            else:
                item.quantity -= e.quantity
            p.cart.updated = ts
            return


def _cart_replaced(p: Profile, e: CartReplaced, ts: int) -> None:
    """The page's lines are the cart; what was known of a product (its category, brand,
    price) stays where the page does not say."""
    known = {item.product_id: item for item in p.cart.items}
    items = []
    for product in e.products[:MAX_CART_ITEMS]:
        item = product.item()
        item.name = product.name[:MAX_NAME]
        before = known.get(item.product_id)
        if before is not None:
            item.category = item.category or before.category
            item.brand = item.brand or before.brand
            item.price = item.price or before.price
            item.name = item.name or before.name
        items.append(item)
    changed = [(i.product_id, i.quantity) for i in items] != [
        (i.product_id, i.quantity) for i in p.cart.items
    ]
    p.cart.items = items
    if changed:  # a cart seen with the same lines is not touched (its age goes on)
        p.cart.updated = ts


def _order_observed(p: Profile, e: OrderObserved, ts: int) -> None:
    items = p.cart.items
    products = [Product(i.product_id, i.category, i.brand, i.price, i.quantity) for i in items]
    total = e.total if e.total is not None else p.cart.value
    _order(p, OrderCompleted(order_id=e.order_id, total=total, products=products), ts)


def _nothing(p: Profile, e: BaseEvent, ts: int) -> None:
    """Cart Viewed and Checkout Started are recorded as page views by the sidecar."""


def _answered(p: Profile, e: ProfileFormAnswered, ts: int) -> None:
    if e.question not in p.answers and len(p.answers) >= MAX_ANSWERS:
        return
    p.answers[e.question] = clip(e.answer)


def _placement_shown(p: Profile, e: PlacementShown, ts: int) -> None:
    key = e.placement_id
    if e.offer and (key in p.offers or len(p.offers) < MAX_OFFERS):
        p.offers[key] = min(ts, p.offers.get(key, ts))
    if e.measured:
        arm = e.arm or ("holdout" if e.held_out else "default")
        _arm_exposed(p, key, arm, ts, tuple(e.links) if not e.held_out else ())
    if e.held_out:
        return
    times = p.exposures.get(key)
    if times is None:
        if len(p.exposures) >= MAX_OFFERS:
            stalest = min(p.exposures, key=lambda k: p.exposures[k][-1])
            del p.exposures[stalest]
        times = p.exposures[key] = []
    times.append(ts)
    times.sort()
    del times[:-MAX_EXPOSURES]


def _arm_exposed(p: Profile, key: str, arm: str, ts: int, links: tuple[int, ...]) -> None:
    arms = p.arms
    record = arms.get(key)
    if record is None:
        if len(arms) >= MAX_OFFERS:
            del arms[min(arms, key=lambda k: arms[k].last)]
        arms[key] = ArmRecord(arm[:MAX_ID], ts, ts, links=links)
        return
    # (records are immutable: a write finds the changed ones by identity)
    later = ts >= record.last
    arms[key] = msgspec.structs.replace(
        record,
        first=min(ts, record.first),  # told late: an earlier exposure than the first known
        last=max(ts, record.last),
        exposures=record.exposures + 1,
        links=links if later else record.links,
    )


def _block_clicked(p: Profile, path: str, ts: int) -> None:
    """A page view of a link of a block shown in the last ``CLICK_WINDOW``: one click
    on that placement's arm (once per showing: the links are spent)."""
    name = link_hash(path)
    arms = p.arms
    for key, r in list(arms.items()):
        if r.links and name in r.links and 0 <= ts - r.last <= CLICK_WINDOW:
            arms[key] = msgspec.structs.replace(r, clicks=r.clicks + 1, links=())


def _placement_viewed(p: Profile, e: PlacementViewed, ts: int) -> None:
    key = e.placement_id or ""
    record = p.arms.get(key)
    if record is not None:  # (no arm: a QA visitor's, or one dropped for room)
        p.arms[key] = msgspec.structs.replace(record, views=record.views + 1)


def _placement_clicked(p: Profile, e: PlacementClicked, ts: int) -> None:
    """One click per showing, whoever tells it first: the beacon spends the showing's
    links (the next page view then counts nothing); a same-site link already spent
    was counted by that page view. A link off the site only the beacon can tell."""
    key = e.placement_id or ""
    record = p.arms.get(key)
    if record is None or record.arm == "holdout":
        return
    href = e.href.split("#", 1)[0].split("?", 1)[0]
    same_site = href.startswith("/") and not href.startswith("//")
    if record.links or not same_site:
        p.arms[key] = msgspec.structs.replace(record, clicks=record.clicks + 1, links=())


def _attribute(p: Profile, total: float, ts: int) -> None:
    """An order at *ts* counts for every arm first exposed within the window before it."""
    window = ATTRIBUTION_WINDOW
    arms = p.arms
    for key, r in list(arms.items()):
        if 0 <= ts - r.first <= window:
            arms[key] = msgspec.structs.replace(r, orders=r.orders + 1, revenue=r.revenue + total)


def _order(p: Profile, e: OrderCompleted, ts: int) -> None:
    after_rec = (
        bool(p.last_recommendation_click) and 0 <= ts - p.last_recommendation_click <= 7 * 86_400
    )
    order = Order(
        order_id=e.order_id,
        ts=ts,
        total=e.total,
        coupon=clip(e.coupon),
        items=[product.item() for product in e.products[:MAX_ORDER_ITEMS]],
        after_recommendation=after_rec,
    )
    _add_order(p, order, e.products)
    if p.arms:
        _attribute(p, e.total, ts)
    # The order empties the cart it came from.
    cart = p.cart
    if cart.items:
        bought = {item.product_id for item in order.items}
        if not bought or all(item.product_id in bought for item in cart.items):
            cart.items.clear()
        else:
            cart.items = [i for i in cart.items if i.product_id not in bought]
    cart.updated = ts


def _add_order(p: Profile, order: Order, products: list[Product]) -> None:
    orders = p.orders
    orders.append(order)
    if len(orders) > 1 and orders[-2].ts > order.ts:  # orders mostly come in time order
        orders.sort(key=_order_ts)  # stable: equal times keep their arrival order
    del orders[:-MAX_ORDERS]
    p.order_count += 1
    p.lifetime_spent = round(p.lifetime_spent + order.total, 2)
    if order.coupon:
        p.coupon_orders += 1
    # _count() inline for both: this loop runs for every imported item.
    categories = p.categories.bought
    brands = p.brands.bought
    for product in products:
        if product.category:
            key = product.category[:MAX_ID]
            categories[key] = categories.get(key, 0) + product.quantity
            if len(categories) > MAX_AFFINITIES:
                cap_top(categories)
        if product.brand:
            key = product.brand[:MAX_ID]
            brands[key] = brands.get(key, 0) + product.quantity
            if len(brands) > MAX_AFFINITIES:
                cap_top(brands)


_order_ts: Final = operator.attrgetter("ts")


def _coupon(p: Profile, e: CouponApplied, ts: int) -> None:
    if e.order_id is None:
        return
    for order in p.orders:
        if order.order_id == e.order_id and not order.coupon:
            order.coupon = clip(e.coupon)
            p.coupon_orders += 1


def _email_sent(p: Profile, e: EmailSent, ts: int) -> None:
    bump(p.email_send_days, ts)


def _email_opened(p: Profile, e: EmailOpened, ts: int) -> None:
    bump(p.email_open_days, ts)


def _identify(p: Profile, e: Identify, ts: int) -> None:
    traits = p.traits
    for key, value in e.traits.items():
        if key in TRAIT_FIELDS:
            _set_trait(traits, key, value)
        elif value is None:
            traits.custom.pop(key, None)
        elif key in traits.custom or len(traits.custom) < MAX_CUSTOM_TRAITS:
            traits.custom[key] = clip(value) if isinstance(value, str) else value


def _set_trait(traits: object, key: str, value: object) -> None:
    numeric = {"birth_year": int, "registered": int, "latitude": float, "longitude": float}
    if value is None:
        setattr(traits, key, None if key in numeric else "")
        return
    if key in numeric:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"trait {key!r} must be a number")
        try:
            setattr(traits, key, numeric[key](value))
        except ValueError:
            raise ValueError(f"trait {key!r} must be a number, got {value!r}") from None
    else:
        setattr(traits, key, clip(str(value)))


def _count(counts: dict[str, int], key: str, n: int = 1) -> None:
    key = key[:MAX_ID]  # clip(), inline: a few calls per imported item
    counts[key] = counts.get(key, 0) + n
    if len(counts) > MAX_AFFINITIES:
        cap_top(counts)


_HANDLERS: Final = {
    PageViewed: _page_viewed,
    ProductsSearched: _searched,
    ProductViewed: _product_viewed,
    ProductListViewed: _list_viewed,
    ProductClicked: _clicked,
    ProductEngaged: _engaged,
    ProductAdded: _added,
    ProductRemoved: _removed,
    CartViewed: _nothing,
    CheckoutStarted: _nothing,
    CartReplaced: _cart_replaced,
    OrderObserved: _order_observed,
    ProfileFormAnswered: _answered,
    PlacementShown: _placement_shown,
    PlacementViewed: _placement_viewed,
    PlacementClicked: _placement_clicked,
    OrderCompleted: _order,
    CouponApplied: _coupon,
    EmailSent: _email_sent,
    EmailOpened: _email_opened,
    Identify: _identify,
}


def record_touch(p: Profile, t: Touch) -> None:
    """Remember where a visit came from; order-independent (touches may arrive late).

    A touch is a request of the visitor's (a landing, maybe a redirect before any
    page): the visit starts with it. Within a visit, a touch that is the same arrival
    as the visit's campaign does not replace it (see :func:`same_arrival`)."""
    touch(p, t.ts)
    if p.session_start - SESSION_GAP < t.ts < p.session_start:
        p.session_start = t.ts  # a landing told late: its visit started with it
    if p.first_touch is None or t.ts < p.first_touch.ts:
        p.first_touch = t
    last = p.last_touch
    if last is None:
        p.last_touch = t
    elif last.ts >= p.session_start and t.ts >= p.session_start and same_arrival(last, t):
        if _has_campaign(t) and not _has_campaign(last):
            p.last_touch = t
    elif t.ts >= last.ts:
        p.last_touch = t


def _has_campaign(t: Touch) -> bool:
    return bool(t.source or t.medium or t.campaign)


def same_arrival(a: Touch, b: Touch) -> bool:
    """Whether two touches of one visit are one arrival told twice: the same referring
    site, one of them without the campaign's utm_* (a campaign link the shop redirected
    without its query: the browser sends the first Referer again with the next page)."""
    return a.referrer == b.referrer and _has_campaign(a) != _has_campaign(b)


def visit_touch(p: Profile | None, t: Touch | None) -> Touch | None:
    """The campaign a request counts under: its own touch, unless it has none or is the
    same arrival as its visit's (then the visit's, which carries the campaign)."""
    last = p.last_touch if p is not None else None
    if last is None or last.ts < p.session_start:  # type: ignore[union-attr]
        return t
    if t is None or (same_arrival(last, t) and _has_campaign(last)):
        return last
    return t


def merge(into: Profile, other: Profile) -> None:
    """Fold *other* (an anonymous profile) into *into* (the customer's), losing no
    counts. Deterministic: the result does not depend on timing, only on content."""
    from edge.profiles.model import merge_counts

    into.aliases = sorted({*into.aliases, other.visitor_id, *other.aliases} - {into.visitor_id})
    into.first_seen = (
        min(x for x in (into.first_seen, other.first_seen) if x)
        if (into.first_seen or other.first_seen)
        else 0
    )
    into.last_seen = max(into.last_seen, other.last_seen)
    into.visits += other.visits
    for name in (
        "visit_days",
        "pageview_days",
        "product_view_days",
        "email_send_days",
        "email_open_days",
    ):
        merge_counts(getattr(into, name), getattr(other, name))
    known = {o.order_id for o in into.orders}
    for order in other.orders:
        if order.order_id not in known:
            into.orders.append(order)
    into.orders.sort(key=lambda o: (o.ts, o.order_id))
    del into.orders[:-MAX_ORDERS]
    into.order_count += other.order_count
    into.lifetime_spent = round(into.lifetime_spent + other.lifetime_spent, 2)
    into.coupon_orders += other.coupon_orders
    for mine, theirs in ((into.categories, other.categories), (into.brands, other.brands)):
        for a, b in ((mine.viewed, theirs.viewed), (mine.bought, theirs.bought)):
            for key, n in b.items():
                a[key] = a.get(key, 0) + n
            cap_top(a)
    into.searches = sorted(into.searches + other.searches, key=lambda s: s.ts)[-MAX_SEARCHES:]
    into.recent_views = sorted(into.recent_views + other.recent_views, key=lambda v: v[0])[
        -MAX_RECENT_VIEWS:
    ]
    into.recommendation_clicks += other.recommendation_clicks
    into.last_recommendation_click = max(
        into.last_recommendation_click, other.last_recommendation_click
    )
    if other.cart.updated > into.cart.updated:
        into.cart = other.cart
    into.dwell_ms += other.dwell_ms
    into.dwell_count += other.dwell_count
    for key, value in other.answers.items():
        into.answers.setdefault(key, value)
    if other.first_touch and (
        into.first_touch is None or other.first_touch.ts < into.first_touch.ts
    ):
        into.first_touch = other.first_touch
    if other.last_touch and (into.last_touch is None or other.last_touch.ts > into.last_touch.ts):
        into.last_touch = other.last_touch
    for key, ts in other.offers.items():
        into.offers[key] = min(ts, into.offers.get(key, ts))
    for key, times in other.exposures.items():
        into.exposures[key] = sorted(into.exposures.get(key, []) + times)[-MAX_EXPOSURES:]
    while len(into.exposures) > MAX_OFFERS:
        del into.exposures[min(into.exposures, key=lambda k: into.exposures[k][-1])]
    _merge_arms(into, other)
    into.consent = into.consent and other.consent
    # Identity and CRM facts: the surviving profile's own values win, the absorbed
    # profile fills what it lacks (an anonymous profile rarely has any; two customer
    # profiles merged by a shared email may both have some).
    into.customer_id = into.customer_id or other.customer_id
    into.email_hash = into.email_hash or other.email_hash
    _fill_traits(into.traits, other.traits)


def _merge_arms(into: Profile, other: Profile) -> None:
    """One unit now: per placement the record first exposed wins (its arm, its first
    time), exposures, orders, revenue and clicks add up (the two profiles' orders are
    distinct: an order id counts once). The daily aggregates follow (see
    :func:`edge.profiles.model.tally_delta`): the absorbed profile's records are
    withdrawn and the merged ones counted, so two cookies of one customer count as
    one unit, on the day of the earliest first exposure."""
    for key, theirs in other.arms.items():
        mine = into.arms.get(key)
        if mine is None:
            into.arms[key] = theirs
            continue
        first = theirs if (theirs.first, theirs.arm) < (mine.first, mine.arm) else mine
        into.arms[key] = ArmRecord(
            first.arm,
            first.first,
            max(mine.last, theirs.last),
            mine.exposures + theirs.exposures,
            mine.orders + theirs.orders,
            mine.revenue + theirs.revenue,
            mine.clicks + theirs.clicks,
            mine.links if mine.last >= theirs.last else theirs.links,
            mine.views + theirs.views,
        )
    while len(into.arms) > MAX_OFFERS:
        del into.arms[min(into.arms, key=lambda k: into.arms[k].last)]


def _fill_traits(into: Traits, other: Traits) -> None:
    for name in into.__struct_fields__:
        if name == "custom":
            continue
        if getattr(into, name) in (None, "") and getattr(other, name) not in (None, ""):
            setattr(into, name, getattr(other, name))
    for key, value in other.custom.items():
        if key in into.custom or len(into.custom) < MAX_CUSTOM_TRAITS:
            into.custom.setdefault(key, value)

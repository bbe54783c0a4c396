"""The demo storefront, "Bottega Aurora": an ordinary server-rendered shop.

It knows nothing about shop-edge. It is what a merchant's shop looks like to the
sidecar: HTML pages with a few slot attributes in the theme, a cart in a cookie,
plain form posts and the usual caching headers.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any

import msgspec
from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from edge.demo.catalog import (
    CATEGORIES,
    CATEGORIES_BY_SLUG,
    FREE_SHIPPING_FROM,
    PRODUCTS_BY_ID,
    PRODUCTS_BY_SLUG,
    SHIPPING_COST,
    Product,
    format_euro,
    products_in,
    search_products,
)

__all__ = ["CART_COOKIE", "CUSTOMER_COOKIE", "create_app"]

CART_COOKIE = "cart"
CUSTOMER_COOKIE = "demo_customer"
MAX_QTY = 99

# Catalogue pages may be cached briefly; they still show the cart count, hence Vary.
CATALOGUE_HEADERS = {"Cache-Control": "public, max-age=60", "Vary": "Cookie"}
PRIVATE_HEADERS = {"Cache-Control": "private, no-store"}
# The stylesheet URL carries a content hash, so it can be cached for good.
STATIC_CACHE_CONTROL = "public, max-age=31536000, immutable"

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
# ASCII digits only: str.isdigit() also accepts "²", which int() rejects.
_QTY = re.compile(r"[0-9]{1,3}")

# Query value of ?ordina= → (label, sort key); "" keeps the merchant's own order.
_SORTS: dict[str, tuple[str, Callable[[Product], int] | None]] = {
    "": ("In evidenza", None),
    "prezzo-asc": ("Prezzo crescente", lambda p: p.price),
    "prezzo-desc": ("Prezzo decrescente", lambda p: -p.price),
}


# --- cart -------------------------------------------------------------------


class CartLine(msgspec.Struct, frozen=True):
    product: Product
    qty: int

    @property
    def subtotal(self) -> int:
        return self.product.price * self.qty


class Cart(msgspec.Struct, frozen=True):
    lines: tuple[CartLine, ...]

    @property
    def count(self) -> int:
        return sum(line.qty for line in self.lines)

    @property
    def subtotal(self) -> int:
        return sum(line.subtotal for line in self.lines)

    @property
    def shipping(self) -> int:
        if not self.lines or self.subtotal >= FREE_SHIPPING_FROM:
            return 0
        return SHIPPING_COST

    @property
    def total(self) -> int:
        return self.subtotal + self.shipping


def read_cart(cookie: str | None) -> dict[str, int]:
    """Quantities by product id from a `cart` cookie such as "p1001:2,p1003:1".

    The cookie is visitor-controlled: unknown ids, bad numbers and junk are
    dropped, quantities are capped, and nothing in it can raise.
    """
    quantities: dict[str, int] = {}
    for entry in (cookie or "").split(","):
        product_id, _, qty_text = entry.strip().partition(":")
        if product_id not in PRODUCTS_BY_ID or _QTY.fullmatch(qty_text) is None:
            continue
        qty = int(qty_text)
        if qty > 0:
            quantities[product_id] = min(MAX_QTY, quantities.get(product_id, 0) + qty)
    return quantities


def encode_cart(quantities: dict[str, int]) -> str:
    return ",".join(f"{product_id}:{qty}" for product_id, qty in quantities.items())


def cart_from(quantities: dict[str, int]) -> Cart:
    return Cart(tuple(CartLine(PRODUCTS_BY_ID[pid], qty) for pid, qty in quantities.items()))


def _quantities_of(request: Request) -> dict[str, int]:
    return read_cart(request.cookies.get(CART_COOKIE))


def _cart_of(request: Request) -> Cart:
    return cart_from(_quantities_of(request))


# --- orders -----------------------------------------------------------------


class OrderLine(msgspec.Struct, frozen=True):
    product_id: str
    brand: str
    name: str
    unit_price: int
    qty: int

    @property
    def subtotal(self) -> int:
        return self.unit_price * self.qty


class Order(msgspec.Struct, frozen=True):
    id: str
    email: str
    name: str
    address: str
    lines: tuple[OrderLine, ...]
    subtotal: int
    shipping: int
    total: int
    placed_at: datetime

    @property
    def item_count(self) -> int:
        return sum(line.qty for line in self.lines)


# --- the app ----------------------------------------------------------------


class _CachedStaticFiles(StaticFiles):
    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = STATIC_CACHE_CONTROL
        return response


def _form_text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _quantity(text: str) -> int:
    """The quantity a form asked for; missing or junk means one, and at most MAX_QTY."""
    try:
        qty = int(text)
    except ValueError:
        return 1
    return max(1, min(MAX_QTY, qty))


def _valid_email(text: str) -> bool:
    return len(text) <= 254 and _EMAIL.fullmatch(text) is not None


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=PRIVATE_HEADERS)


def _set_cart(response: Response, quantities: dict[str, int]) -> None:
    if quantities:
        # Not HttpOnly: the edge snippet in the browser may read the cart.
        response.set_cookie(
            CART_COOKIE, encode_cart(quantities), max_age=30 * 24 * 3600, samesite="lax"
        )
    else:
        response.delete_cookie(CART_COOKIE, samesite="lax")


@functools.cache
def _templates() -> Environment:
    # Shared by every app instance: compiled templates are immutable, and
    # compiling them again for each app would slow down every test that makes one.
    templates = Environment(
        loader=PackageLoader("edge.demo", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    templates.filters["euro"] = format_euro
    return templates


@functools.cache
def _stylesheet_url() -> str:
    stylesheet = (files("edge.demo") / "static" / "shop.css").read_bytes()
    return f"/static/shop.css?v={hashlib.sha256(stylesheet).hexdigest()[:10]}"


class _DemoShop:
    """Routes of one shop instance; orders live in its memory for the process's life."""

    def __init__(self) -> None:
        self.templates = _templates()
        self.stylesheet_url = _stylesheet_url()
        self.orders: dict[str, Order] = {}
        self._order_numbers = itertools.count(100001)

    def routes(self) -> list[Route | Mount]:
        return [
            Route("/", self.home),
            Route("/c/{category_slug}", self.category),
            Route("/p/{product_slug}", self.product),
            Route("/search", self.search),
            Route("/cart", self.cart),
            Route("/cart/add", self.cart_add, methods=["POST"]),
            Route("/cart/remove", self.cart_remove, methods=["POST"]),
            Route("/checkout", self.checkout, methods=["GET"]),
            Route("/checkout", self.place_order, methods=["POST"]),
            Route("/order/{order_id}", self.order),
            Route("/login", self.login, methods=["GET"]),
            Route("/login", self.log_in, methods=["POST"]),
            Route("/account", self.account),
            Route("/logout", self.log_out, methods=["POST"]),
            Route("/index.html", self.old_home),
            Route("/robots.txt", self.robots),
            Mount(
                "/static",
                _CachedStaticFiles(packages=[("edge.demo", "static")]),
                name="static",
            ),
        ]

    def render(
        self,
        request: Request,
        template: str,
        *,
        page_type: str,
        headers: dict[str, str],
        status_code: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        context.setdefault("title", "Bottega Aurora")
        context.setdefault("query", "")
        context.setdefault("current_category", None)
        html = self.templates.get_template(template).render(
            page_type=page_type,
            categories=CATEGORIES,
            cart_count=_cart_of(request).count,
            customer=self.customer(request),
            stylesheet_url=self.stylesheet_url,
            free_shipping_from=FREE_SHIPPING_FROM,
            shipping_cost=SHIPPING_COST,
            max_qty=MAX_QTY,
            **context,
        )
        return HTMLResponse(html, status_code=status_code, headers=headers)

    @staticmethod
    def customer(request: Request) -> str | None:
        # The demo trusts this cookie unsigned; a real shop would use a session.
        email = request.cookies.get(CUSTOMER_COOKIE, "")
        return email if _valid_email(email) else None

    # catalogue

    async def home(self, request: Request) -> Response:
        shelves = [
            {"category": category, "products": products[:4], "total": len(products)}
            for category in CATEGORIES
            for products in [products_in(category.slug)]
        ]
        return self.render(
            request, "home.html", page_type="home", headers=CATALOGUE_HEADERS, shelves=shelves
        )

    async def category(self, request: Request) -> Response:
        category = CATEGORIES_BY_SLUG.get(request.path_params["category_slug"])
        if category is None:
            raise HTTPException(404)
        sort = request.query_params.get("ordina", "")
        if sort not in _SORTS:
            sort = ""
        products = products_in(category.slug)
        sort_key = _SORTS[sort][1]
        if sort_key is not None:
            products = tuple(sorted(products, key=sort_key))
        return self.render(
            request,
            "category.html",
            page_type="category",
            headers=CATALOGUE_HEADERS,
            title=category.name,
            current_category=category.slug,
            category=category,
            products=products,
            sort=sort,
            sort_options=[(key, label) for key, (label, _) in _SORTS.items()],
        )

    async def product(self, request: Request) -> Response:
        product = PRODUCTS_BY_SLUG.get(request.path_params["product_slug"])
        if product is None:
            raise HTTPException(404)
        siblings = products_in(product.category)
        # The four products after this one, wrapping around, so every page differs.
        start = siblings.index(product) + 1
        related = [siblings[(start + i) % len(siblings)] for i in range(4)]
        return self.render(
            request,
            "product.html",
            page_type="product",
            headers=CATALOGUE_HEADERS,
            title=f"{product.name} · {product.brand}",
            current_category=product.category,
            product=product,
            category=CATEGORIES_BY_SLUG[product.category],
            related=related,
        )

    async def search(self, request: Request) -> Response:
        query = request.query_params.get("q", "").strip()[:100]
        return self.render(
            request,
            "search.html",
            page_type="search",
            headers=CATALOGUE_HEADERS,
            title=f"Risultati per “{query}”" if query else "Cerca",
            query=query,
            results=search_products(query),
        )

    async def old_home(self, request: Request) -> Response:
        # The old home page's address, still in old newsletters and ads: sent on to the
        # home page without its query, as many shops' redirects do (utm_* included).
        return RedirectResponse(
            "/", status_code=302, headers={"Cache-Control": "public, max-age=300"}
        )

    async def robots(self, request: Request) -> Response:
        rules = "\n".join(
            [
                "User-agent: *",
                "Disallow: /cart",
                "Disallow: /checkout",
                "Disallow: /order/",
                "Disallow: /account",
                "Disallow: /login",
                "Disallow: /search",
                "",
            ]
        )
        return PlainTextResponse(rules, headers={"Cache-Control": "public, max-age=86400"})

    # cart and checkout

    async def cart(self, request: Request) -> Response:
        return self.render(
            request,
            "cart.html",
            page_type="cart",
            headers=PRIVATE_HEADERS,
            title="Carrello",
            cart=_cart_of(request),
        )

    async def cart_add(self, request: Request) -> Response:
        form = await request.form()
        product_id = _form_text(form, "product_id")
        if product_id not in PRODUCTS_BY_ID:
            raise HTTPException(404)
        quantities = _quantities_of(request)
        added = _quantity(_form_text(form, "qty"))
        quantities[product_id] = min(MAX_QTY, quantities.get(product_id, 0) + added)
        response = _redirect("/cart")
        _set_cart(response, quantities)
        return response

    async def cart_remove(self, request: Request) -> Response:
        form = await request.form()
        quantities = _quantities_of(request)
        quantities.pop(_form_text(form, "product_id"), None)
        response = _redirect("/cart")
        _set_cart(response, quantities)
        return response

    async def checkout(self, request: Request) -> Response:
        return self.render(
            request,
            "checkout.html",
            page_type="checkout",
            headers=PRIVATE_HEADERS,
            title="Cassa",
            cart=_cart_of(request),
            values={},
            errors={},
        )

    async def place_order(self, request: Request) -> Response:
        cart = _cart_of(request)
        if not cart.lines:
            return _redirect("/cart")
        form = await request.form()
        values = {field: _form_text(form, field) for field in ("name", "email", "address")}
        errors: dict[str, str] = {}
        if not values["name"]:
            errors["name"] = "Inserisci nome e cognome."
        if not _valid_email(values["email"]):
            errors["email"] = "Inserisci un indirizzo e-mail valido, per esempio anna@esempio.it."
        if not values["address"]:
            errors["address"] = "Inserisci l'indirizzo di spedizione."
        if errors:
            return self.render(
                request,
                "checkout.html",
                page_type="checkout",
                headers=PRIVATE_HEADERS,
                status_code=400,
                title="Cassa",
                cart=cart,
                values=values,
                errors=errors,
            )
        order = Order(
            id=f"A-{next(self._order_numbers)}",
            email=values["email"],
            name=values["name"],
            address=values["address"],
            lines=tuple(
                OrderLine(
                    line.product.id,
                    line.product.brand,
                    line.product.name,
                    line.product.price,
                    line.qty,
                )
                for line in cart.lines
            ),
            subtotal=cart.subtotal,
            shipping=cart.shipping,
            total=cart.total,
            placed_at=datetime.now(UTC),
        )
        self.orders[order.id] = order
        response = _redirect(f"/order/{order.id}")
        _set_cart(response, {})
        return response

    async def order(self, request: Request) -> Response:
        order = self.orders.get(request.path_params["order_id"])
        if order is None:
            raise HTTPException(404)
        return self.render(
            request,
            "order.html",
            page_type="order",
            headers=PRIVATE_HEADERS,
            title=f"Ordine {order.id}",
            order=order,
        )

    # account

    async def login(self, request: Request) -> Response:
        return self.render(
            request,
            "login.html",
            page_type="login",
            headers=PRIVATE_HEADERS,
            title="Accedi",
            email="",
            error="",
        )

    async def log_in(self, request: Request) -> Response:
        form = await request.form()
        email = _form_text(form, "email")
        # Any password will do in the demo, as long as there is one.
        if not _valid_email(email) or not _form_text(form, "password"):
            return self.render(
                request,
                "login.html",
                page_type="login",
                headers=PRIVATE_HEADERS,
                status_code=400,
                title="Accedi",
                email=email,
                error="Inserisci un'e-mail valida e una password.",
            )
        response = _redirect("/account")
        response.set_cookie(CUSTOMER_COOKIE, email, httponly=True, samesite="lax")
        return response

    async def account(self, request: Request) -> Response:
        customer = self.customer(request)
        if customer is None:
            return _redirect("/login")
        orders = sorted(
            (o for o in self.orders.values() if o.email.casefold() == customer.casefold()),
            key=lambda o: o.placed_at,
            reverse=True,
        )
        return self.render(
            request,
            "account.html",
            page_type="account",
            headers=PRIVATE_HEADERS,
            title="Il mio account",
            orders=orders,
        )

    async def log_out(self, request: Request) -> Response:
        response = _redirect("/")
        response.delete_cookie(CUSTOMER_COOKIE, httponly=True, samesite="lax")
        return response

    # errors

    async def error_page(self, request: Request, exc: Exception) -> Response:
        status_code = exc.status_code if isinstance(exc, HTTPException) else 500
        if status_code == 404:
            heading = "Pagina non trovata"
            message = "Il prodotto o la pagina che cerchi non c'è più, o non c'è mai stata."
        else:
            heading = "Qualcosa non ha funzionato"
            message = "Non siamo riusciti a completare la richiesta. Riprova tra poco."
        headers = {"Cache-Control": "no-store"}
        if isinstance(exc, HTTPException) and exc.headers:
            headers.update(exc.headers)  # e.g. Allow on a 405
        return self.render(
            request,
            "error.html",
            page_type="error",
            headers=headers,
            status_code=status_code,
            title=heading,
            heading=heading,
            message=message,
            error_code=status_code,
        )


def create_app() -> Starlette:
    """A fresh demo shop with an empty order book."""
    shop = _DemoShop()
    app = Starlette(
        routes=shop.routes(),
        exception_handlers={HTTPException: shop.error_page},
    )
    app.state.shop = shop
    return app


def serve_argv(port: int, python: str = sys.executable) -> list[str]:
    """The command that serves the demo shop alone on 127.0.0.1:*port* (uvicorn, warnings
    only): for tests and benchmarks that need a real shop in front of the sidecar."""
    return [
        python,
        "-m",
        "uvicorn",
        "edge.demo.shop:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]

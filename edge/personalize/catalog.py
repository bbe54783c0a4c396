"""Product facts: what the sidecar knows about the products in a list.

Facts come from two places, and the page wins where it says something:

- the item's own markup: start-tag attributes (``data-product-id``, ``data-category``,
  ``data-brand``, ``data-price``; names configurable in :class:`ItemReader`), or the
  id taken from the item's first link by a pattern such as ``/p/(?P<id>[^/?#]+)``;
- a catalog feed file the merchant exports (:meth:`Catalog.load`): CSV with a header
  row, a JSON array (or ``{"products": [...]}``) or JSON Lines, with the columns
  ``id``, ``category``, ``brand``, ``price`` and optionally ``name`` and ``url`` (used
  to name and link the items of a cart reminder). Other columns are ignored.

A feed with mistakes is refused as a whole with every problem listed as
``file:line: what is wrong`` (the previous catalog keeps serving).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from edge.caches import LRU, Memo

__all__ = [
    "Catalog",
    "CatalogError",
    "ItemFacts",
    "ItemReader",
    "LearnedCatalog",
    "link_path",
    "parse_price",
]

MAX_PROBLEMS: Final = 20
"""Problems listed in one error before "and N more"."""

_ID_LIMIT: Final = 128


@dataclass(frozen=True, slots=True)
class ItemFacts:
    """One product's facts. Empty strings and ``None`` mean unknown."""

    product_id: str
    category: str = ""
    brand: str = ""
    price: float | None = None
    name: str = ""
    url: str = ""
    currency: str = ""
    availability: str = ""
    """``in stock``, ``out of stock``, ``preorder``... (schema.org's, lowercased)."""

    def over(self, base: ItemFacts | None) -> ItemFacts:
        """These facts, with the gaps filled from *base* (the feed's)."""
        if base is None:
            return self
        return ItemFacts(
            self.product_id or base.product_id,
            self.category or base.category,
            self.brand or base.brand,
            self.price if self.price is not None else base.price,
            self.name or base.name,
            self.url or base.url,
            self.currency or base.currency,
            self.availability or base.availability,
        )

    def as_record(self) -> dict[str, str | float | None]:
        """The facts as a feed row (how the learned catalog persists them)."""
        return {
            "id": self.product_id,
            "category": self.category,
            "brand": self.brand,
            "price": self.price,
            "name": self.name,
            "url": self.url,
            "currency": self.currency,
            "availability": self.availability,
        }


class CatalogError(Exception):
    """A feed that cannot be used; ``problems`` lists ``file:line: reason`` lines."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = problems[:MAX_PROBLEMS]
        more = len(problems) - len(shown)
        super().__init__("\n".join(shown) + (f"\n… and {more} more" if more else ""))


_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def parse_price(text: str) -> float:
    """A price as a merchant writes it: ``89.90``, ``89,90``, ``€ 1.249,90``,
    ``1,249.90 EUR``. The last ``.`` or ``,`` followed by one or two digits is the
    decimal separator; others group thousands. Raises ``ValueError``."""
    raw = text.strip()
    m = _NUMBER.search(raw)
    if not m or _NUMBER.search(raw, m.end()) or raw.lstrip("€$£ ").startswith("-"):
        raise ValueError(f"price {text!r} is not a number")
    digits = m.group()
    head, sep, tail = max(digits.rpartition("."), digits.rpartition(","), key=lambda p: len(p[0]))
    if sep and len(tail) <= 2:
        whole = re.sub(r"[.,]", "", head)
        value = float(f"{whole}.{tail}")
    else:
        value = float(re.sub(r"[.,]", "", digits))
    return value


class Catalog:
    """Product facts by id, from a feed file (or built in code for tests)."""

    version: int = 0
    """Changes whenever a fact does (a feed's never; see :class:`LearnedCatalog`)."""

    def __init__(self, products: Mapping[str, ItemFacts] | None = None, source: str = "") -> None:
        self.products: dict[str, ItemFacts] = dict(products or {})
        self.source = source

    def __len__(self) -> int:
        return len(self.products)

    def __contains__(self, product_id: object) -> bool:
        return product_id in self.products

    def get(self, product_id: str | None) -> ItemFacts | None:
        return self.products.get(product_id) if product_id else None

    def lookup(self, ref: str) -> ItemFacts | None:
        """By product id, else by a product page's slug (the last segment of its
        ``url``): what the sidecar sees of a product page is its URL."""
        facts = self.products.get(ref)
        if facts is not None:
            return facts
        slugs = self.__dict__.get("_slugs")
        if slugs is None:
            slugs = self.__dict__["_slugs"] = {
                f.url.rstrip("/").rsplit("/", 1)[-1]: f for f in self.products.values() if f.url
            }
        return slugs.get(ref)

    @property
    def categories(self) -> set[str]:
        return {f.category for f in self.products.values() if f.category}

    @property
    def brands(self) -> set[str]:
        return {f.brand for f in self.products.values() if f.brand}

    @classmethod
    def load(cls, path: str | Path) -> Catalog:
        """Read a ``.csv``, ``.json`` or ``.jsonl``/``.ndjson`` feed. Raises
        :class:`CatalogError` naming the file and line of every problem."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise CatalogError([f"{path}: cannot read the catalog: {exc.strerror}"]) from None
        except UnicodeDecodeError as exc:
            line = path.read_bytes()[: exc.start].count(b"\n") + 1
            raise CatalogError([f"{path}:{line}: not UTF-8 text; save the feed as UTF-8"]) from None
        suffix = path.suffix.lower()
        if suffix == ".csv":
            rows = _csv_rows(text, str(path))
        elif suffix in (".jsonl", ".ndjson"):
            rows = _jsonl_rows(text, str(path))
        elif suffix == ".json":
            rows = _json_rows(text, str(path))
        else:
            raise CatalogError([f"{path}: unknown feed type {suffix!r}; use .csv, .json or .jsonl"])
        return cls.from_rows(rows, str(path))

    @classmethod
    def from_rows(cls, rows: Iterator[tuple[int, Any]], source: str) -> Catalog:
        """Build from ``(line, record)`` pairs; records are mappings of column → value."""
        problems: list[str] = []
        products: dict[str, ItemFacts] = {}
        first_line: dict[str, int] = {}
        try:
            for line, record in rows:
                where = f"{source}:{line}"
                if not isinstance(record, Mapping):
                    problems.append(f"{where}: expected an object with id, category, brand, price")
                    continue
                try:
                    facts = _facts(record)
                except ValueError as exc:
                    problems.append(f"{where}: {exc}")
                    continue
                if facts.product_id in products:
                    problems.append(
                        f"{where}: product {facts.product_id!r} already listed on line "
                        f"{first_line[facts.product_id]}; keep one row per product"
                    )
                    continue
                products[facts.product_id] = facts
                first_line[facts.product_id] = line
        except CatalogError as exc:  # a syntax error ends the file: report what came before too
            problems.extend(exc.problems)
        if problems:
            raise CatalogError(problems)
        return cls(products, source)


def _text(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{key} must be text, got {type(value).__name__}")
    return str(value).strip()


def _facts(record: Mapping[str, Any]) -> ItemFacts:
    product_id = _text(record, "id")
    if not product_id:
        raise ValueError("missing id (every product needs an 'id')")
    if len(product_id) > _ID_LIMIT:
        raise ValueError(f"id longer than {_ID_LIMIT} characters")
    raw_price = record.get("price")
    price: float | None
    if raw_price is None or raw_price == "":
        price = None
    elif isinstance(raw_price, bool):
        raise ValueError("price must be a number, got true/false")
    elif isinstance(raw_price, int | float):
        if raw_price < 0:
            raise ValueError(f"price {raw_price} is negative")
        price = float(raw_price)
    elif isinstance(raw_price, str):
        price = parse_price(raw_price)
    else:
        raise ValueError(f"price must be a number, got {type(raw_price).__name__}")
    return ItemFacts(
        product_id,
        _text(record, "category"),
        _text(record, "brand"),
        price,
        _text(record, "name"),
        _text(record, "url"),
        _text(record, "currency"),
        _text(record, "availability"),
    )


def _csv_rows(text: str, source: str) -> Iterator[tuple[int, Any]]:
    try:
        dialect: Any = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    try:
        header = next(reader)
    except StopIteration:
        raise CatalogError([f"{source}:1: empty file; the first row names the columns"]) from None
    except csv.Error as exc:
        raise CatalogError([f"{source}:1: {exc}"]) from None
    columns = [h.strip().lower() for h in header]
    if "id" not in columns:
        raise CatalogError(
            [
                f"{source}:1: no 'id' column in the header row ({', '.join(columns) or 'empty'}); "
                "expected id, category, brand, price"
            ]
        )
    line = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise CatalogError([f"{source}:{reader.line_num}: {exc}"]) from None
        line, start = reader.line_num, line + 1
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(columns):
            raise CatalogError(
                [
                    f"{source}:{start}: {len(row)} values but the header names {len(columns)} "
                    "columns (a value with the separator in it needs quotes)"
                ]
            )
        yield start, dict(zip(columns, row, strict=False))


def _jsonl_rows(text: str, source: str) -> Iterator[tuple[int, Any]]:
    for line, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            yield line, json.loads(raw)
        except json.JSONDecodeError as exc:
            raise CatalogError([f"{source}:{line}: invalid JSON: {exc.msg}"]) from None


def _json_rows(text: str, source: str) -> Iterator[tuple[int, Any]]:
    decoder = json.JSONDecoder()

    def fail(pos: int, msg: str) -> CatalogError:
        return CatalogError([f"{source}:{text.count(chr(10), 0, pos) + 1}: {msg}"])

    def skip(pos: int) -> int:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        return pos

    pos = skip(0)
    if text.startswith("{", pos):  # {"products": [...]}: find the list and read it in place
        m = re.compile(r'\{\s*"products"\s*:\s*').match(text, pos)
        if not m:
            raise fail(pos, 'expected a list of products or {"products": [...]}')
        pos = m.end()
    if not text.startswith("[", pos):
        raise fail(pos, "expected a list of products")
    pos = skip(pos + 1)
    if text.startswith("]", pos):
        return
    while True:
        try:
            record, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise fail(exc.pos, f"invalid JSON: {exc.msg}") from None
        yield text.count("\n", 0, pos) + 1, record
        pos = skip(end)
        if text.startswith(",", pos):
            pos = skip(pos + 1)
        elif text.startswith("]", pos):
            return
        else:
            raise fail(pos, "expected ',' or ']' after a product")


def link_path(url: str) -> str:
    """A product link as the catalog knows it: its path, decoded, without the query,
    the fragment or a trailing slash (``https://shop/p/shoe-1/?ref=x`` → ``/p/shoe-1``),
    so a list's links and a product page's canonical URL meet."""
    try:
        path = urlsplit(url.strip()).path
    except ValueError:
        return ""
    return unquote(path).rstrip("/")


class LearnedCatalog(Catalog):
    """The feed (optional) and what the shop's own product pages taught.

    The page is the shop's live truth: a fact read from a product page wins over the
    feed's, and the feed fills what the page does not say. Learned facts are bounded
    (least recently learned or used forgotten first) and found by product id, by
    their page's path (``by_link``) or by its last segment (``lookup``). ``version``
    changes whenever a fact does, so readers that remember facts know to read again.
    """

    def __init__(self, feed: Catalog | None = None, maxsize: int = 20_000) -> None:
        super().__init__(feed.products if feed is not None else {}, feed.source if feed else "")
        self.maxsize = maxsize
        self.learned: LRU[str, ItemFacts] = LRU(maxsize)
        self._paths: LRU[str, str] = LRU(2 * maxsize)
        self._slugs_learned: LRU[str, str] = LRU(2 * maxsize)
        self._category_names: LRU[str, str] = LRU(4096)
        self.version = 0
        self._known_categories = {f.category for f in self.products.values() if f.category}
        """Categories as the products' facts name them (the feed's and learned)."""
        for facts in self.products.values():
            if facts.url:
                self._paths[link_path(facts.url)] = facts.product_id

    def learn(self, facts: ItemFacts) -> bool:
        """Take a product page's facts; whether anything changed."""
        if not facts.product_id:
            return False
        old = self.learned.get(facts.product_id)
        merged = facts.over(old)
        if merged == old:
            return False
        self.learned[facts.product_id] = merged
        if merged.category:
            self._known_categories.add(merged.category)
        if merged.url:
            path = link_path(merged.url)
            if path:
                self._paths[path] = merged.product_id
                self._slugs_learned[path.rsplit("/", 1)[-1]] = merged.product_id
        self.version += 1
        return True

    def learn_path(self, path: str, product_id: str) -> None:
        """The path a product page was asked at (it may differ from its canonical URL)."""
        key = link_path(path)
        if key and product_id and self._paths.get(key) != product_id:
            self._paths[key] = product_id
            self._slugs_learned[key.rsplit("/", 1)[-1]] = product_id
            self.version += 1

    def learn_category(self, slug: str, name: str) -> None:
        """A category page's URL segment and the name its page shows."""
        if slug and name and self._category_names.get(slug) != name:
            self._category_names[slug] = name
            self.version += 1

    def category_name(self, slug: str) -> str:
        """A category page's URL segment as the products' facts name the category:
        the segment itself if they name it so (a feed of slugs), else the name its
        page showed, else the segment."""
        if slug in self._known_categories:
            return slug
        return self._category_names.get(slug) or slug

    def get(self, product_id: str | None) -> ItemFacts | None:
        if not product_id:
            return None
        learned = self.learned.get(product_id)
        feed = self.products.get(product_id)
        return feed if learned is None else learned.over(feed)

    def lookup(self, ref: str) -> ItemFacts | None:
        found = self.get(ref)
        if found is not None:
            return found
        by_slug = self._slugs_learned.get(ref)
        if by_slug is not None:
            return self.get(by_slug)
        return super().lookup(ref)

    def by_link(self, href: str) -> ItemFacts | None:
        """The product whose page a list item's link leads to, if known."""
        product_id = self._paths.get(link_path(href)) if href else None
        return self.get(product_id)

    @property
    def categories(self) -> set[str]:
        return super().categories | {f.category for f in self.learned.values() if f.category}

    @property
    def brands(self) -> set[str]:
        return super().brands | {f.brand for f in self.learned.values() if f.brand}

    def records(self) -> list[dict[str, str | float | None]]:
        """The learned facts as feed rows, least recently learned first (to persist)."""
        return [f.as_record() for f in self.learned.values()]

    def restore(self, records: list[Any]) -> int:
        """Learned facts persisted earlier (rows that do not read are skipped); how
        many were taken."""
        taken = 0
        for record in records:
            try:
                facts = _facts(record)
            except (ValueError, AttributeError, TypeError):
                continue
            taken += self.learn(facts)
        return taken


_SERIALS: Final = itertools.count()
"""Serial numbers of the facts item readers remember, unique in the process."""


@dataclass(frozen=True)
class ItemReader:
    """How a theme marks its list items: attribute names and a link pattern.

    ``facts(attrs, first_href)`` gives an item's facts from its start-tag attributes
    (names lowercased, values decoded) and, if the id is not in an attribute, from the
    item's first link matched against ``link_pattern`` (group ``id``, or group 1).
    The item's own attributes win over the catalog's facts; the catalog fills gaps.
    With a :class:`LearnedCatalog`, an item is also found by its link's slug or its
    link's path (the product page the shop taught it). Facts are remembered by the
    attribute values they come from and the catalog's ``version``.
    """

    id_attr: str = "data-product-id"
    category_attr: str = "data-category"
    brand_attr: str = "data-brand"
    price_attr: str = "data-price"
    link_pattern: str | None = None
    catalog: Catalog | None = None

    def _known(self, product_id: str, first_href: str | None) -> ItemFacts | None:
        """The catalog's facts for an item: by id, by the id's slug, by its link."""
        catalog = self.catalog
        if catalog is None:
            return None
        found = catalog.get(product_id) if product_id else None
        if found is None and isinstance(catalog, LearnedCatalog):
            found = catalog.lookup(product_id) if product_id else None
            if found is None and first_href:
                found = catalog.by_link(first_href)
        return found

    def __post_init__(self) -> None:
        pattern = re.compile(self.link_pattern) if self.link_pattern else None
        if pattern is not None and pattern.groups == 0:
            raise ValueError(
                f"item id pattern {self.link_pattern!r} needs a group for the id, "
                "e.g. /p/(?P<id>[^/?#]+)"
            )
        object.__setattr__(self, "_pattern", pattern)
        # Facts by the attribute values they come from: a list's items are the same
        # on every response, and parsing their prices is most of reading them.
        object.__setattr__(self, "_memo", Memo(4096))

    def product_id(self, attrs: Mapping[str, str], first_href: str | None = None) -> str | None:
        value = attrs.get(self.id_attr, "").strip()
        if value:
            return value
        pattern: re.Pattern[str] | None = self._pattern  # type: ignore[attr-defined]
        if pattern is not None and first_href:
            m = pattern.search(first_href)
            if m:
                found = m.group("id") if "id" in pattern.groupindex else m.group(1)
                return found or None
        return None

    def facts(self, attrs: Mapping[str, str], first_href: str | None = None) -> ItemFacts | None:
        """The item's facts, or ``None`` if it has no id and no facts of its own."""
        return self.read(attrs, first_href)[1]

    def read(
        self, attrs: Mapping[str, str], first_href: str | None = None
    ) -> tuple[int, ItemFacts | None]:
        """The item's facts and their serial number: the same number for the same
        attribute values while the reader remembers them, never given to other facts
        (a list's order can be remembered by its items' numbers)."""
        memo: Memo[tuple[str | None, ...], tuple[int, ItemFacts | None]] = self._memo  # type: ignore[attr-defined]
        key = (
            attrs.get(self.id_attr),
            attrs.get(self.price_attr),
            attrs.get(self.category_attr),
            attrs.get(self.brand_attr),
            first_href,
            catalog.version if (catalog := self.catalog) is not None else 0,
        )
        try:
            return memo[key]
        except KeyError:
            return memo.put(key, (next(_SERIALS), self._facts(attrs, first_href)))

    def _facts(self, attrs: Mapping[str, str], first_href: str | None) -> ItemFacts | None:
        own_id = attrs.get(self.id_attr, "").strip()
        product_id = self.product_id(attrs, first_href) or ""
        price: float | None = None
        raw_price = attrs.get(self.price_attr, "").strip()
        if raw_price:
            try:
                price = parse_price(raw_price)
            except ValueError:
                price = None  # a theme's odd price text: fall back to the feed
        own = ItemFacts(
            product_id,
            attrs.get(self.category_attr, "").strip(),
            attrs.get(self.brand_attr, "").strip(),
            price,
        )
        base = self._known(product_id, first_href)
        if base is not None and not own_id:
            # Known by its link: the catalog's id is the one orders and pins use.
            own = dataclasses.replace(own, product_id=base.product_id)
        facts = own.over(base)
        if not (facts.product_id or facts.category or facts.brand or facts.price is not None):
            return None
        return facts

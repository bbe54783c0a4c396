"""``edge import FILE``: the shop's orders, customers and email events from files.

Formats: CSV with a header row (comma or semicolon, auto-detected), JSON Lines
(``.jsonl``/``.ndjson``, one object per line) and ``.json`` holding one array of
objects. The kind comes from ``--kind``, else from the file name (``orders``,
``customers``, ``emails``, ``events``...), else from the columns; the report says
which was chosen and why.

Kinds and their columns (names are case-insensitive; ``date`` may stand for ``ts``):

- ``orders``: ``order_id``, ``user_id|email|anonymous_id``, ``ts|date`` (ISO 8601
  date or datetime, UTC when no offset is given, or unix seconds), ``total``,
  ``coupon?``. Either one row per order (optional ``products``, a JSON array of
  ``{"product_id", "category", "brand", "price", "quantity"}``) or one row per line
  item (``product_id, category?, brand?, price?, quantity?, name?``): rows with the
  same ``order_id`` anywhere in the file make one order; they must agree on the
  customer, time, total and coupon (``total`` may be left out: it is then the sum of
  ``price * quantity``). Other columns are ignored (and named in the report).
- ``customers``: ``user_id|email``, ``anonymous_id?`` (merges that visitor's
  anonymous profile into the customer's), the traits ``birth_year, age_band, gender,
  city, country, latitude, longitude, language, registered``; any other column is a
  custom trait. An empty cell leaves the stored value alone. One row makes one
  ``Identify`` event.
- ``emails``: ``user_id|email|anonymous_id``, ``ts|date``, ``type`` (``sent`` or
  ``opened``), ``campaign?``, ``event_id?`` -> ``Email Sent`` / ``Email Opened``.
- ``events``: JSON only, each object exactly an event of the vocabulary
  (``{"event": "Order Completed", ...}``, see :mod:`edge.profiles.events`).

Every line is converted through the declared event types, so a bad value is reported
as msgspec words it, with the physical line (1-based; the CSV header is line 1):
``orders.csv:17: total: Expected float, got "12,5€"``. An order is applied whole or
not at all: when one of its item rows is bad, its other rows are reported too.

Applying: without ``--strict`` the good lines are applied (one transaction per
``CHUNK`` orders/rows) and the bad ones reported; with ``--strict`` a file with any bad
line applies nothing, and a good file is applied in one transaction. Exit status
(:meth:`ImportReport.exit_code`): 0 when every line was good, 1 when any line was bad
(whether or not the good ones were applied); problems with the file as a whole
(unreadable, unknown kind, missing columns) raise :class:`ImportFailed` (the CLI
exits 2).

Idempotent: orders are claimed by order id, every other event by its ``event_id``;
rows without one get a stable id derived from their content (kind and normalised
fields), so importing a file twice changes nothing the second time.

How it works
------------

Two halves, pipelined (:mod:`~edge.importer.pipeline`). *Reading* turns the file into
batches of events and bad lines, in file order: :mod:`~edge.importer.formats` reads CSV,
JSON Lines or a JSON array as records and tells the kind, :mod:`~edge.importer.records`
checks each record against the declared event types, and :mod:`~edge.importer.orders`
gathers item rows into orders. *Applying* (:mod:`~edge.importer.bulk`) takes each batch
as it comes and changes the profiles it touches in memory, by the rules of
:mod:`edge.profiles.stitching` (``ProfileService``'s own); only when the whole file is
read does it write, in chunks of independent groups, a transaction each. Big files are
read in a second process while this one applies. :mod:`~edge.importer.report` holds
what the operator is told, :mod:`~edge.importer.progress` the progress bars. How fast
it is, and what made it so: ``bench/README.md``.
"""

from edge.importer.bulk import CHUNK
from edge.importer.formats import KINDS
from edge.importer.pipeline import import_file
from edge.importer.report import ImportFailed, ImportReport, LineError

__all__ = ["CHUNK", "KINDS", "ImportFailed", "ImportReport", "LineError", "import_file"]

"""Building blocks of the on-site activities (pure, I/O-light; :mod:`edge.activities`
uses them):

- :mod:`.catalog`: product facts from item attributes, a link pattern or a feed file;
- :mod:`.ordering`: category product order (affinity, price, pin, bought last);
- :mod:`.snippets`: the merchant's Jinja2 blocks, sandboxed, with language variants;
- :mod:`.profiling`: the profiling form's questions, one missing trait at a time;
- :mod:`.offers`: timed offer deadlines fixed at first exposure, frequency caps.
"""

from edge.personalize.catalog import Catalog, CatalogError, ItemFacts, ItemReader
from edge.personalize.offers import OfferState, frequency_allows, offer_state
from edge.personalize.ordering import Interest, ListOrder, Sort, order
from edge.personalize.profiling import AnswerError, Question, default_questions, next_question
from edge.personalize.snippets import (
    SnippetProblem,
    Snippets,
    accept_languages,
    visitor_context,
)

__all__ = [
    "AnswerError",
    "Catalog",
    "CatalogError",
    "Interest",
    "ItemFacts",
    "ItemReader",
    "ListOrder",
    "OfferState",
    "Question",
    "SnippetProblem",
    "Snippets",
    "Sort",
    "accept_languages",
    "default_questions",
    "frequency_allows",
    "next_question",
    "offer_state",
    "order",
    "visitor_context",
]

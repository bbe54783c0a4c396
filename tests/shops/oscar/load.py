"""Fill an empty Oscar database with the test shop: its categories, products (brand as
a product attribute and in the title), a partner with stock at a price for each, so
every product can be put in the basket and bought as a guest.

    DJANGO_SETTINGS_MODULE=tests.shops.oscar.settings python -m tests.shops.oscar.load
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import django


def load() -> None:
    import oscar
    from django.conf import settings
    from django.core.management import call_command
    from oscar.apps.catalogue.categories import create_from_breadcrumbs
    from oscar.core.loading import get_model

    from tests.shops.oscar.catalog import CATEGORIES, ITEMS

    product_class_model = get_model("catalogue", "ProductClass")
    attribute_model = get_model("catalogue", "ProductAttribute")
    product_model = get_model("catalogue", "Product")
    product_category_model = get_model("catalogue", "ProductCategory")
    partner_model = get_model("partner", "Partner")
    stock_model = get_model("partner", "StockRecord")

    # nothing to ship: a guest's checkout is gateway, payment, preview, thank-you
    kind = product_class_model.objects.create(
        name="Goods", requires_shipping=False, track_stock=True
    )
    attribute_model.objects.create(product_class=kind, name="Brand", code="brand", type="text")
    partner = partner_model.objects.create(name="Oscar Sandbox Warehouse")
    categories = {name: create_from_breadcrumbs(name) for name in CATEGORIES}
    for item in ITEMS:
        product = product_model.objects.create(
            title=item.title,
            upc=item.upc,
            product_class=kind,
            structure="standalone",
            description=f"{item.title}, by {item.brand}.",
            is_public=True,
        )
        product.attr.brand = item.brand
        product.attr.save()
        product_category_model.objects.create(product=product, category=categories[item.category])
        stock_model.objects.create(
            product=product,
            partner=partner,
            partner_sku=item.upc,
            price_currency="EUR",
            price=item.price,
            num_in_stock=1000,
        )
    call_command("rebuild_index", interactive=False, verbosity=0)
    # Oscar's guide: its "image not found" picture in MEDIA_ROOT, for the thumbnailer
    media = Path(settings.MEDIA_ROOT)
    media.mkdir(parents=True, exist_ok=True)
    missing = Path(oscar.__file__).parent / "static" / "oscar" / "img" / "image_not_found.jpg"
    shutil.copy(missing, media / settings.OSCAR_MISSING_IMAGE_URL)


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.shops.oscar.settings")
    django.setup()
    load()

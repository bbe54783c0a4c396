"""The bundled demo shop that shop-edge is demonstrated and tested against.

`edge.demo.shop.create_app()` builds the storefront; `edge.demo.catalog` holds its products.
"""

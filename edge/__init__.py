"""shop-edge: an on-site personalization sidecar for online shops."""

__version__ = "0.1.0"

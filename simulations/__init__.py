"""Seeded fault scenarios over the real protocol cores (see ``python -m simulations``)."""

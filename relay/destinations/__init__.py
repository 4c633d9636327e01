"""Destinations: one module per external system, all behind the interface in ``base``."""

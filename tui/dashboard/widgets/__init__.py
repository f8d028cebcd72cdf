"""Widgets used by more than one dashboard screen."""

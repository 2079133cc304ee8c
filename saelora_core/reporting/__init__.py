"""Figures, their export, and the one-file HTML report of an adapter."""

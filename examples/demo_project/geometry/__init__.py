"""Tiny geometry helpers used to demonstrate docgen."""

"""Helpers shared by the tests (kept out of the package: users never import them)."""

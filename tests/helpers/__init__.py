"""Test-only helpers: fakes for unit tests and tiny local models built offline."""

"""Unit tests of the sans-I/O core: plain calls, a fake clock, seeded uids; no I/O."""

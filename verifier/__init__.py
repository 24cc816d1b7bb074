"""Offline verification for Bucket transparency logs (standard library + PyNaCl only)."""

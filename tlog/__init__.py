"""Bucket: an append-only, provable artifact depository on RFC 6962 Merkle logs."""

"""Processes of the distributed runtime run natively on one machine (no Docker)."""

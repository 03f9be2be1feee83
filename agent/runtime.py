"""Placeholder wiring for live mode until the runtime issue lands."""

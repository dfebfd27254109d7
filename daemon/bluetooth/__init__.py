"""Adapter set-up, the pairing agent, the phone registry and auto-connect (issue 3)."""

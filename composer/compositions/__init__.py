"""Saved compositions as registry modules: their face (`kind.py`)."""

"""Prefix tuning (Li & Liang 2021): per-layer key and value prefixes; see interop and kind."""

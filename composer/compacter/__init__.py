"""Compacter and Compacter++ (Karimi Mahabadi et al. 2021): bottleneck adapters whose projections are sums of
Kronecker products (PHM layers), as AdapterHub 1.3's `CompacterConfig` / `CompacterPlusPlusConfig`."""

"""Diff pruning (Guo et al. 2021): a sparse task-specific delta on the frozen linears; see modules and kind."""

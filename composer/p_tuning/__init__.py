"""P-tuning v1 (Liu et al. 2021): a shallow prompt trained through a prompt encoder; see interop and kind."""

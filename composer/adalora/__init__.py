"""AdaLoRA (Zhang et al. 2023): SVD-form LoRA with a rank budget allocated by importance; see modules, allocator."""

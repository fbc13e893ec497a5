"""(IA)³ (Liu et al. 2022): learned vectors that rescale chosen linear projections' inputs or outputs."""

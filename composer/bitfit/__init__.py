"""BitFit (Ben Zaken et al. 2022): only bias terms train; a module stores its bias deltas."""

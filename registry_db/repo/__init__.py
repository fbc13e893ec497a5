"""Repository functions. Each takes a Session and adds to the caller's transaction; the caller
(`Registry.tx()`) commits once, so every operation is all-or-nothing."""

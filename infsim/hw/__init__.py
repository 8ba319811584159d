"""Hardware timing models: each fast model (numba / closed form) sits beside its slower reference."""

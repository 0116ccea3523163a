"""Sequence models (S4, S4D, S5, PTD, long convolutions) and implicit models (LPN, CGS): next issues."""

"""The pure core: timing, windows, conditions, reactions, scoring. No I/O, no wall clock."""

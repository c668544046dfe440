"""The data stage: the family's CSV layouts, reading and checking CSVs, offline sources, the split."""

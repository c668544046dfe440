"""The job stage: the spec, the record and ledger, the split, the on-disk contract of every output."""

"""A transparency-log witness (C2SP tlog-witness) that a regulator runs: `blockd witness`."""

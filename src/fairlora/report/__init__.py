"""Results of runs: the versioned results.json schema and terminal tables."""

"""Auditing a model per subgroup: one prediction pass, then every metric from stored predictions."""

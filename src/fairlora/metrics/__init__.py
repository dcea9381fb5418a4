"""Pure per-group metrics: MetricTable, bootstrap CIs, utility, calibration, membership, bias scores.

Nothing here loads a model or reads a run folder: every function takes arrays or prediction frames.
"""

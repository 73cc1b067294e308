"""Inference: the analysis pipeline, aggregation rules and reports."""

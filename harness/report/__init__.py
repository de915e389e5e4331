"""Turning records into what people read: terminal tables now; Pareto analysis, plots and
W&B later."""

"""Turning records into what people read: the terminal table, the Pareto report (Markdown,
CSV, plots, HTML) and Weights & Biases runs."""

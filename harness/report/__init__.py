"""The report layer: a run's metrics rows (read through its manifest) beside stored baselines: tables (Markdown,
LaTeX, CSV), sample grids and plots under results/<recipe>/. It never plans or runs anything."""

"""The recipe layer: a YAML recipe read and validated (text, schema, load), expanded over its sweep (sweep),
scaled down for --smoke (smoke), and planned into typed jobs (jobs, planner); the run manifest that records what a
run planned (manifest). Import from the modules themselves."""

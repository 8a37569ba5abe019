"""The run layer: a plan's jobs submitted through submitit (Slurm, local, debug) in the order their references
need, the entry point every submitted job runs, the training and evaluation workers, and status / cancel."""

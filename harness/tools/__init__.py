"""The tools layer: commands built on the layers below: `plan` (cost, memory, sbatch preview), `prepare` (data
sets), `refs import`, `bench jvp` / `bench precision`, and the findings (`findings tangent-terms`)."""

"""Your own unlearning methods: a module here with `unlearn(problem, forget, cfg) -> θ_u` runs as
`unlearn.method: plugins.<module>:unlearn`, its settings from `unlearn.plugin`. The stages that run
methods (unlearn, attack, defend) depend on this folder, so editing a method reruns them.
examples/bounded_ascent.py shows one."""

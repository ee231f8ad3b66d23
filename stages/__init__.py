"""The pipeline's stages: one thin Typer command each (parse, load, call, save, log)."""

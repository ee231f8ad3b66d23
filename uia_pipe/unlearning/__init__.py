"""Unlearning methods, one module each; `methods.METHODS` is their registry and
`config` their settings (kept apart, so that reading the settings imports no method)."""

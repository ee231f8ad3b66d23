"""Attacks on the pair (θ, θ_u). Each sees only its view (`view.py`)."""

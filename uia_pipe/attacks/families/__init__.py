"""The attack families of the registry (`uia_pipe.attacks.ATTACKS`), one module each:
what turns a run into each attack's views, and each result into scores."""

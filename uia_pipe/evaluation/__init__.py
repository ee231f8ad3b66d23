"""The evaluator's side: what the attacker must never import (tests/test_wall.py). The Setting of a run (D_u,
the requests, what each removed), the grants and questions each family receives (`grants`), the server's
recipe replayed (`server`: shadow and audit pairs), the campaign that runs and scores every family
(`campaign`), and the sweeps that attack a run again under each defence and access level (`sweep`, `access`)."""

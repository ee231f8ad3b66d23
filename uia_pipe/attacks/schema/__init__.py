"""The attack families' settings, apart from the attacks: one schema leaf per family
(pydantic only), so that validating params (`uia check`) imports no attack, torch,
pandas or scikit-learn. Each family's module takes its `Config` from here, and the
registry (`uia_pipe.attacks.ATTACKS`) asserts it agrees with FAMILY_CONFIGS."""

from __future__ import annotations

from pydantic import BaseModel

from . import compound, feature_recovery, label_inference, membership, recovery
from . import compound, feature_recovery, label_inference, membership, secrets

# Family name (the params key attack.<name>) -> its config type, in the registry's order.
FAMILY_CONFIGS: dict[str, type[BaseModel]] = {
    "label_inference": label_inference.Config,
    "feature_recovery": feature_recovery.Config,
    "membership": membership.Config,
    "compound": compound.Config,
    "recovery": recovery.Config,
    "exposure": secrets.ExposureConfig,
    "extraction": secrets.ExtractionConfig,
    "text_recovery": secrets.TextRecoveryConfig,
}

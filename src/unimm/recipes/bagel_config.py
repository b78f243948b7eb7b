"""Settings of the BAGEL recipe (RunConfig.bagel); apart from the recipe so the run config can
name them without importing model code."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(kw_only=True)
class BagelConfig:
    # True: the mixture-of-transformer-experts backbone (unimm.model.mot), one expert for
    # generation tokens and one for the rest. False: the dense backbone with everything else
    # unchanged, the comparison "at equal active parameters" (each token of the MoT passes one
    # expert of the dense model's size).
    mot: bool = True

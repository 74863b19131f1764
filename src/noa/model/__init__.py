"""The NOA backbone (θ-conditioned U-AFNO) and the latent projector used for L_latent."""

from noa.model.afno import AFNOBlock
from noa.model.projector import LatentProjector
from noa.model.uafno import UAFNO, UAFNOConfig, check_grid

__all__ = ["AFNOBlock", "LatentProjector", "UAFNO", "UAFNOConfig", "check_grid"]

"""The NOA backbone (θ-conditioned U-AFNO, a θ-generated stack beside or instead of it) and the
latent projector used for L_latent."""

from noa.model.afno import AFNOBlock
from noa.model.projector import LatentProjector
from noa.model.uafno import UAFNO, UAFNOConfig, check_grid

__all__ = ["AFNOBlock", "LatentProjector", "UAFNO", "UAFNOConfig", "check_grid"]

"""What the TrigFlow methods share in training: the proposal of t, ln(sd tan t) ~ N(P_mean, P_std^2) (sCM Alg. 1),
with z ~ N(0, sd^2 I), and the adaptive weight w(t) they learn beside the network (or w = 0)."""
from pydantic import Field

from ..objectives import draw_noise
from ..weighting import WeightFeatures, loss_weight
from .base import MethodSettings


class ProposalSettings(MethodSettings):
    p_mean: float = -1.0  # the training proposal: ln(sd tan t) ~ N(P_mean, P_std^2)
    p_std: float = Field(1.4, gt=0)
    # truncate the proposal at this EDM sigma, so t <= arctan(sigma_max / sd) (e.g. 80, EDM's sigma_max); None: not
    sigma_max: float | None = Field(None, gt=0)
    adaptive_weighting: bool = True  # learn w(t) (EDM2, Alg. 1); false: w = 0, every t weighted equally (Fig. 5)
    weight_features: WeightFeatures = "positional"  # what w(t) is a linear function of (scm/weighting.py)


class LogNormalProposal:
    """A mixin for methods whose settings are ProposalSettings: their draws and their w(t)."""

    def auxiliary_modules(self):
        return {"weight": self.weight()}

    def weight(self):
        """A fresh w(t) as the settings ask for it (settings of a plugged-in method that predate `weight_features`
        and `sigma_max` get their defaults)."""
        features = getattr(self.settings, "weight_features", "positional")
        return loss_weight(self.settings.adaptive_weighting, features, self.sigma_data)

    def draw(self, shape, generator, device):
        s = self.settings
        return draw_noise(shape, s.p_mean, s.p_std, self.sigma_data, generator, None, device,
                          sigma_max=getattr(s, "sigma_max", None))

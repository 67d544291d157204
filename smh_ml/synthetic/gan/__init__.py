"""Per-class GANs: SDG-GAN (WGAN-GP) and the DCGAN baseline."""

from smh_ml.synthetic.gan.networks import DCGANDiscriminator, DCGANGenerator, SDGCritic, SDGGenerator, build_gan
from smh_ml.synthetic.gan.training import generate, gradient_penalty, train_gan

__all__ = ["DCGANDiscriminator", "DCGANGenerator", "SDGCritic", "SDGGenerator", "build_gan",
           "generate", "gradient_penalty", "train_gan"]

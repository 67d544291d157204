import dataclasses
import warnings

import numpy as np
import pytest
import torch
from conftest import toy_set
from torch import nn

from smh_ml.gan.networks import DCGANDiscriminator, DCGANGenerator, SDGCritic, SDGGenerator
from smh_ml.gan.training import generate, gradient_penalty, train_gan
from smh_ml.profiles import GanConfig

TABLE2 = [(512, 8), (256, 16), (128, 32), (128, 64), (64, 128), (64, 128), (64, 128), (32, 256), (1, 256)]
TABLE3 = [(32, 128), (64, 64), (128, 32), (256, 16), (512, 8), (1024, 4)]


def test_sdg_generator_matches_table_2():
    g = SDGGenerator(patch=256, latent=256, width=1.0).eval()
    x = g.fc(torch.randn(2, 256)).view(-1, 512, 4, 4)
    shapes = []
    for layer in g.body:
        x = layer(x)
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            shapes.append((x.shape[1], x.shape[2]))
    assert shapes == TABLE2
    assert isinstance(g.fc[1], nn.BatchNorm1d) and isinstance(g.body[-1], nn.Tanh)
    kernels = [m.kernel_size[0] for m in g.body if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert kernels == [4, 4, 4, 6, 6, 4, 4, 6, 5]


def test_sdg_critic_matches_table_3():
    c = SDGCritic(patch=256, width=1.0)
    x = torch.zeros(2, 1, 256, 256)
    shapes = []
    for layer in c.features:
        x = layer(x)
        if isinstance(layer, nn.AvgPool2d):
            shapes.append((x.shape[1], x.shape[2]))
    assert shapes == TABLE3
    assert c.flat_features == 16_384 and c.head[1].out_features == 1
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in c.modules())
    assert [m.kernel_size[0] for m in c.features if isinstance(m, nn.Conv2d)] == [7, 5, 5, 5, 3, 3]


def test_dcgan_baseline_is_table_1():
    g, d = DCGANGenerator(256, 256), DCGANDiscriminator(256)
    assert not any(isinstance(m, nn.Conv2d) for m in g.modules())  # transposed convs only
    assert any(isinstance(m, nn.BatchNorm2d) for m in g.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in d.modules())
    assert any(isinstance(m, nn.ReLU) for m in g.modules()) and isinstance(g.body[-1], nn.Tanh)
    assert g(torch.randn(2, 256)).shape == (2, 1, 256, 256) and d(torch.zeros(2, 1, 256, 256)).shape == (2,)


@pytest.mark.parametrize("patch,width", [(64, 0.25), (128, 0.5), (32, 0.125)])
def test_small_profiles_reuse_the_networks(patch, width):
    g, c = SDGGenerator(patch, 64, width), SDGCritic(patch, width)
    assert g(torch.randn(3, 64)).shape == (3, 1, patch, patch) and c(torch.zeros(3, 1, patch, patch)).shape == (3,)


def test_gradient_penalty_matches_a_hand_computation():
    critic = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
    with torch.no_grad():
        critic[1].weight.copy_(torch.arange(16, dtype=torch.float32).view(1, 16) / 20)
    real, fake = torch.rand(5, 1, 4, 4), torch.rand(5, 1, 4, 4)
    w = critic[1].weight.detach()
    expected = (w.norm() - 1.0) ** 2  # a linear critic's gradient is w everywhere
    assert float(gradient_penalty(critic, real, fake)) == pytest.approx(float(expected), rel=1e-5)


def _cfg(**kw):
    base = GanConfig(latent=16, width=0.125, epochs=4, batch_size=16, n_critic=3, augment_to=0,
                     checkpoint_every=1, seed=0)
    return dataclasses.replace(base, **kw)


def test_wgan_gp_steps_reduce_the_critic_loss():
    x, _ = toy_set(n_per_class=32, size=16)
    state = train_gan(x, "sdg", _cfg(epochs=5))
    losses = [h["critic_loss"] for h in state.history]
    assert losses[-1] < losses[0]
    assert {"generator_loss", "gradient_penalty", "wasserstein"} <= set(state.history[0])


def test_resume_gives_the_same_state(tmp_path):
    x, _ = toy_set(n_per_class=16, size=16)
    straight = train_gan(x, "sdg", _cfg(), checkpoint=tmp_path / "a.pt")
    train_gan(x, "sdg", _cfg(), checkpoint=tmp_path / "b.pt", stop_after=2)  # "crashes" after 2
    resumed = train_gan(x, "sdg", _cfg(), checkpoint=tmp_path / "b.pt")
    assert resumed.history == straight.history
    for (k, a), (_, b) in zip(straight.generator.state_dict().items(), resumed.generator.state_dict().items()):
        assert torch.equal(a, b), k
    other_kind = train_gan(x, "dcgan", _cfg(epochs=2), checkpoint=tmp_path / "b.pt")  # never resumes an sdg
    assert [h["epoch"] for h in other_kind.history] == [1, 2]


def test_a_changed_training_set_or_setting_retrains_from_scratch(tmp_path, caplog):
    x, _ = toy_set(n_per_class=16, size=16)
    first = train_gan(x, "sdg", _cfg(), checkpoint=tmp_path / "c.pt")
    again = train_gan(x, "sdg", _cfg(), checkpoint=tmp_path / "c.pt")  # same inputs: the finished run
    assert again.history == first.history
    new_data = x.copy()
    new_data[0] = 255 - new_data[0]  # a new data version
    fresh = train_gan(new_data, "sdg", _cfg(), checkpoint=tmp_path / "c.pt")
    assert [h["epoch"] for h in fresh.history] == [1, 2, 3, 4] and fresh.history != first.history
    assert "training from scratch" in caplog.text
    longer = train_gan(new_data, "sdg", _cfg(lr=1e-4), checkpoint=tmp_path / "c.pt")  # a changed setting
    assert [h["epoch"] for h in longer.history] == [1, 2, 3, 4] and longer.history != fresh.history


def test_dcgan_trains_and_generation_is_seeded():
    x, _ = toy_set(n_per_class=16, size=16)
    state = train_gan(x, "dcgan", _cfg(epochs=2))
    a, b = generate(state.generator, 10, 16, seed=4), generate(state.generator, 10, 16, seed=4)
    assert a.shape == (10, 16, 16) and a.dtype == np.uint8 and np.array_equal(a, b)


def test_fid_is_zero_on_itself_and_grows_with_noise():
    from smh_ml.fid import DomainFeatures, gan_scores
    from smh_ml.models import build
    from smh_ml.profiles import TrainConfig
    from smh_ml.training import fit, seed_everything

    x, y = toy_set(n_per_class=32, size=16)
    seed_everything(0)
    model = fit(build("baseline_cnn", 3, 16), x, y,
                TrainConfig(epochs=4, batch_size=16, lr=1e-3, l2=1e-4)).model
    extractor = DomainFeatures(model)
    rng = np.random.default_rng(0)
    warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
    fids, kids = [], []
    for std in (0, 15, 40):
        noisy = np.clip(x.astype(float) + rng.normal(0, std, x.shape), 0, 255).astype(np.uint8)
        scores = gan_scores(x, noisy, extractor, "domain", kid_subsets=20)
        fids.append(scores["fid"])
        kids.append(scores["kid_mean"])
    assert abs(fids[0]) < 1e-3 and fids[0] < fids[1] < fids[2]
    assert kids[1] < kids[2]

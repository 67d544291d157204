import dataclasses
import warnings

import numpy as np
import pytest
import torch
from conftest import toy_set
from torch import nn

from smh_ml.config.schema import GanConfig
from smh_ml.synthetic.gan.diffaugment import POLICIES, cutout, diff_augment, translation
from smh_ml.synthetic.gan.networks import DCGANDiscriminator, DCGANGenerator, SDGCritic, SDGGenerator
from smh_ml.synthetic.gan.training import (
    generate,
    gradient_penalty,
    mode_seeking_ratio,
    total_steps,
    train_gan,
    update_ema,
)

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


@pytest.mark.parametrize("patch,width", [(256, 1.0), (64, 0.25)])
def test_resize_upsampling_keeps_table_2_sizes_without_transposed_convs(patch, width):
    """``upsample=resize`` swaps each stride-2 transposed conv for a nearest doubling and a
    conv of the same kernel and channels; every other layer and every size stays."""
    paper, resized = SDGGenerator(patch, 256, width), SDGGenerator(patch, 256, width, "resize")
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in resized.modules())

    def convs(g):
        layers = (nn.Conv2d, nn.ConvTranspose2d)
        return [(m.kernel_size[0], m.out_channels) for m in g.body.modules() if isinstance(m, layers)]

    assert convs(resized) == convs(paper)
    assert resized(torch.randn(2, 256)).shape == paper(torch.randn(2, 256)).shape == (2, 1, patch, patch)
    with pytest.raises(ValueError, match="upsampling 'bilinear'"):
        SDGGenerator(patch, 256, width, "bilinear")


def test_gradient_penalty_matches_a_hand_computation():
    critic = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
    with torch.no_grad():
        critic[1].weight.copy_(torch.arange(16, dtype=torch.float32).view(1, 16) / 20)
    real, fake = torch.rand(5, 1, 4, 4), torch.rand(5, 1, 4, 4)
    w = critic[1].weight.detach()
    expected = (w.norm() - 1.0) ** 2  # a linear critic's gradient is w everywhere
    assert float(gradient_penalty(critic, real, fake)) == pytest.approx(float(expected), rel=1e-5)


def _cfg(**kw):
    base = GanConfig(latent=16, width=0.125, steps=4, batch_size=16, n_critic=3, augment_to=0,
                     checkpoint_every=1, seed=0)
    return dataclasses.replace(base, **kw)


def _mean_gap(real: np.ndarray):
    """A cheap stand-in for FID in tests of the training loop: the gap of mean grey levels."""
    return lambda fake: {"fid": float(abs(fake.astype(float).mean() - real.astype(float).mean())),
                         "extractor": "mean-gap"}


def test_wgan_gp_steps_reduce_the_critic_loss():
    x, _ = toy_set(n_per_class=32, size=16)
    state = train_gan(x, "sdg", _cfg(steps=20))
    losses = [h["critic_loss"] for h in state.history]
    assert state.step == 20 and losses[-1] < losses[0]
    assert {"generator_loss", "gradient_penalty", "wasserstein"} <= set(state.history[0])


def test_the_budget_is_in_generator_steps_or_derived_from_epochs():
    assert total_steps(_cfg(steps=7), 1000, "sdg") == 7
    # 48 patches in batches of 16 = 3 batches a pass; 4 passes = 12 critic batches = 4 generator steps
    assert total_steps(_cfg(steps=0, epochs=4), 48, "sdg") == 4
    assert total_steps(_cfg(steps=0, epochs=4), 48, "dcgan") == 12


def test_mode_seeking_makes_distinct_latents_draw_distinct_images():
    z = torch.randn(8, 16)
    same = torch.ones(8, 2, 16, 16)
    assert float(mode_seeking_ratio(same, z)) == 0.0
    apart = torch.cat([torch.zeros(4, 2, 16, 16), torch.ones(4, 2, 16, 16)])
    assert float(mode_seeking_ratio(apart, z)) == pytest.approx(1.0 / float((z[:4] - z[4:]).abs().mean()))
    # 200 steps on toy blobs from one seed: the plain generator's samples spread about half as much
    # as the real ones across samples; with the mode-seeking term about as much
    x, y = toy_set(n_per_class=32, size=16)
    blobs = x[y == 1]
    base = _cfg(steps=200, n_critic=2, lr=1e-4, critic_lr=4e-4, checkpoint_every=1000)
    spread = {}
    for weight in (0.0, 1.0):
        state = train_gan(blobs, "sdg", dataclasses.replace(base, mode_seeking=weight))
        spread[weight] = generate(state.sampler(), 64, 16, seed=1).astype(np.float32).std(axis=0).mean()
        assert any("mode_seeking_ratio" in h for h in state.history) is (weight > 0)
    real = blobs.astype(np.float32).std(axis=0).mean()
    assert spread[1.0] > 1.4 * spread[0.0] and spread[1.0] > 0.7 * real, (spread, real)


def test_resume_gives_the_same_state(tmp_path):
    x, _ = toy_set(n_per_class=16, size=16)
    # 150 steps log a mean every 3; the "crash" after step 100 falls inside an interval
    cfg = _cfg(steps=150, diffaugment=("color", "translation", "cutout"), ema=0.9, eval_every=20, patience=10,
               batch_size=8, width=0.0625)
    straight = train_gan(x, "sdg", cfg, checkpoint=tmp_path / "a.pt", score=_mean_gap(x))
    train_gan(x, "sdg", cfg, checkpoint=tmp_path / "b.pt", stop_after=100, score=_mean_gap(x))  # "crashes"
    resumed = train_gan(x, "sdg", cfg, checkpoint=tmp_path / "b.pt", score=_mean_gap(x))
    assert resumed.history == straight.history and resumed.step == 150
    assert resumed.best["step"] == straight.best["step"]
    for net in ("generator", "critic", "ema"):
        for (k, a), (_, b) in zip(getattr(straight, net).state_dict().items(),
                                  getattr(resumed, net).state_dict().items()):
            assert torch.equal(a, b), (net, k)
    other_kind = train_gan(x, "dcgan", _cfg(steps=2), checkpoint=tmp_path / "b.pt")  # never resumes an sdg
    assert [h["step"] for h in other_kind.history] == [1, 2]


def _conv_weights(net: torch.nn.Module) -> list[torch.Tensor]:
    # 1-channel or 1x1 weights are both layouts at once; the others tell them apart
    return [p for p in net.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[-1] > 1]


def test_training_and_resumed_networks_are_channels_last(tmp_path):
    x, _ = toy_set(n_per_class=16, size=16)
    cfg = _cfg(steps=4, ema=0.9, batch_size=8, width=0.0625, checkpoint_every=2)
    train_gan(x, "sdg", cfg, checkpoint=tmp_path / "c.pt", stop_after=2)
    resumed = train_gan(x, "sdg", cfg, checkpoint=tmp_path / "c.pt")
    assert resumed.step == 4
    for net in (resumed.generator, resumed.critic, resumed.ema):
        weights = _conv_weights(net)
        assert weights and all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
        assert not any(w.is_contiguous() for w in weights)


def test_a_changed_training_set_or_setting_retrains_from_scratch(tmp_path, caplog):
    x, _ = toy_set(n_per_class=16, size=16)
    first = train_gan(x, "sdg", _cfg(), checkpoint=tmp_path / "c.pt")
    again = train_gan(x, "sdg", _cfg(), checkpoint=tmp_path / "c.pt")  # same inputs: the finished run
    assert again.history == first.history
    new_data = x.copy()
    new_data[0] = 255 - new_data[0]  # a new data version
    fresh = train_gan(new_data, "sdg", _cfg(), checkpoint=tmp_path / "c.pt")
    assert [h["step"] for h in fresh.history] == [1, 2, 3, 4] and fresh.history != first.history
    assert "training from scratch" in caplog.text
    longer = train_gan(new_data, "sdg", _cfg(lr=1e-4), checkpoint=tmp_path / "c.pt")  # a changed setting
    assert [h["step"] for h in longer.history] == [1, 2, 3, 4] and longer.history != fresh.history
    resized = train_gan(new_data, "sdg", _cfg(lr=1e-4, upsample="resize"), checkpoint=tmp_path / "c.pt")
    assert [h["step"] for h in resized.history] == [1, 2, 3, 4] and resized.history != longer.history
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in resized.generator.modules())


def test_a_checkpoint_scored_by_another_extractor_is_not_resumed(tmp_path, caplog):
    """FID checkpoints pick the kept weights and the plateau: a run scored in other features
    (a retrained domain extractor) starts again instead of mixing two FID scales."""
    from smh_ml.synthetic.fid import extractor_id

    x, _ = toy_set(n_per_class=16, size=16)
    cfg = _cfg(steps=6, eval_every=2, patience=10)
    one, two = nn.Linear(3, 2), nn.Linear(3, 2)
    assert extractor_id("domain", one) == extractor_id("domain", one) != extractor_id("domain", two)

    def run(extractor: nn.Module, stop_after: int):
        return train_gan(x, "sdg", cfg, checkpoint=tmp_path / "s.pt", stop_after=stop_after, score=_mean_gap(x),
                         score_id=extractor_id("domain", extractor))

    run(one, 4)  # "crashes" after step 4
    run(one, 5)
    assert "training from scratch" not in caplog.text  # the same scorer: resumed
    other = run(two, 5)
    assert "training from scratch" in caplog.text
    assert other.step == 5 and [h["step"] for h in other.history if "fid" in h] == [2, 4]


def test_dcgan_trains_and_generation_is_seeded():
    x, _ = toy_set(n_per_class=16, size=16)
    state = train_gan(x, "dcgan", _cfg(steps=4, diffaugment=("translation",)))
    a, b = generate(state.generator, 10, 16, seed=4), generate(state.generator, 10, 16, seed=4)
    assert a.shape == (10, 16, 16) and a.dtype == np.uint8 and np.array_equal(a, b)


def test_diffaugment_transforms_differentiably():
    torch.manual_seed(0)
    x = torch.full((4, 1, 16, 16), -1.0)
    x[:, :, 8, 8] = 1.0  # one bright pixel
    rng = torch.Generator().manual_seed(0)
    moved = translation(x, rng)
    assert moved.shape == x.shape
    bright = [(m[0] == 1.0).nonzero().tolist() for m in moved]
    assert all(len(b) == 1 and abs(b[0][0] - 8) <= 2 and abs(b[0][1] - 8) <= 2 for b in bright)
    assert len({tuple(b[0]) for b in bright}) > 1  # one draw per sample
    ones = torch.ones(64, 1, 16, 16)
    cut = cutout(ones, torch.Generator().manual_seed(1))
    assert ((cut == 0).sum(dim=(1, 2, 3)) <= 64).all() and (cut == 0).any()  # at most an 8x8 square
    assert ((cut == 0).sum(dim=(1, 2, 3)) == 64).any()  # the whole square where it fits
    grey = torch.rand(8, 1, 16, 16, requires_grad=True)
    out = diff_augment(grey, POLICIES, torch.Generator().manual_seed(2))
    out.sum().backward()
    assert out.shape == grey.shape and grey.grad is not None and grey.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown DiffAugment policy"):
        diff_augment(grey, ("rotate",))


def test_diffaugment_is_applied_to_real_and_fake_alike(monkeypatch):
    """Every image the critic sees, real or generated, in the critic's and the generator's
    step, went through the same DiffAugment policy; only the gradient penalty's interpolates
    (made of augmented images) are not augmented again."""
    from smh_ml.synthetic.gan import training

    x, _ = toy_set(n_per_class=16, size=16)
    cfg = _cfg(diffaugment=("color", "translation", "cutout"))
    data = training.to_gan_input(x)
    state = training.new_state("sdg", 16, cfg)
    augmented, policies, critic_inputs = [], set(), []
    original = training.diff_augment

    def spy(batch, policy, rng):
        out = original(batch, policy, rng)
        is_real = all((data == row).flatten(1).all(1).any() for row in batch.detach())
        augmented.append((is_real, out))
        policies.add(tuple(policy))
        return out

    monkeypatch.setattr(training, "diff_augment", spy)
    state.critic.register_forward_pre_hook(lambda module, args: critic_inputs.append(args[0]))
    training._step_wgan(state, data, cfg)
    assert policies == {cfg.diffaugment}
    assert sum(r for r, _ in augmented) == cfg.n_critic  # one real batch per critic update
    assert sum(not r for r, _ in augmented) == cfg.n_critic + 1  # and every fake batch, the generator's too
    outputs = [o for _, o in augmented]
    for seen in critic_inputs:
        assert any(seen is o for o in outputs) or (seen.is_leaf and seen.requires_grad), "an unaugmented input"


def test_ema_weights_differ_from_the_raw_ones_and_are_the_ones_sampled(tmp_path):
    x, _ = toy_set(n_per_class=16, size=16)
    state = train_gan(x, "sdg", _cfg(steps=10, ema=0.9))
    assert state.sampler() is state.ema
    raw, ema = state.generator.state_dict(), state.ema.state_dict()
    assert any(not torch.equal(raw[k], ema[k]) for k in raw if raw[k].is_floating_point())
    assert np.array_equal(generate(state.sampler(), 8, 16, seed=3), generate(state.ema, 8, 16, seed=3))
    assert not np.array_equal(generate(state.ema, 8, 16, seed=3), generate(state.generator, 8, 16, seed=3))
    a, b = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        a.weight.fill_(0.0)
        b.weight.fill_(1.0)
    update_ema(a, b, decay=0.75)
    assert torch.allclose(a.weight, torch.full_like(a.weight, 0.25))


def test_training_stops_on_a_plateau_and_keeps_the_best_weights():
    x, _ = toy_set(n_per_class=16, size=16)
    fids = iter([5.0, 3.0, 4.0, 4.5, 6.0, 1.0, 0.5])
    snapshots = []

    def score(fake):
        snapshots.append(fake)
        return {"fid": next(fids), "extractor": "scripted"}

    state = train_gan(x, "sdg", _cfg(steps=14, eval_every=2, patience=3, ema=0.5, fid_samples=32), score=score)
    assert state.stopped == "plateau" and state.step == 10  # best at step 4, then 3 worse checkpoints
    assert [h["fid"] for h in state.history if "fid" in h] == [5.0, 3.0, 4.0, 4.5, 6.0]
    assert state.best["step"] == 4
    assert np.array_equal(generate(state.sampler(), 32, 16, seed=1), snapshots[1])  # the sampler is the best


def _blob_contrast(images: np.ndarray) -> np.ndarray:
    """Per image: the brightest 4 x 4 mean minus the median grey level (a blob is about +90)."""
    pooled = torch.nn.functional.avg_pool2d(torch.from_numpy(images).float().unsqueeze(1), 4, stride=1)
    return (pooled.flatten(1).amax(1) - torch.from_numpy(images).float().flatten(1).median(1).values).numpy()


@pytest.mark.e2e
def test_a_gan_learns_toy_shapes():
    """Bright 4 x 4 blobs on a noisy background: with the CPU recipe (two time-scale rates,
    DiffAugment, EMA) FID falls well below the untrained generator's in under a thousand
    steps, and most samples hold a blob, which the untrained generator never draws."""
    from smh_ml.config.schema import TrainConfig
    from smh_ml.models import build
    from smh_ml.synthetic.fid import DomainFeatures, gan_scores
    from smh_ml.synthetic.gan.training import new_state
    from smh_ml.training.loop import fit, seed_everything

    x, y = toy_set(n_per_class=64, size=16)
    seed_everything(0)
    features = DomainFeatures(fit(build("baseline_cnn", 3, 16), x, y,
                                  TrainConfig(epochs=4, batch_size=16, lr=1e-3, l2=1e-4)).model)
    blobs = x[y == 1]
    warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
    score = lambda fake: gan_scores(blobs, fake, features, "toy", kid_subsets=10)  # noqa: E731
    cfg = GanConfig(latent=32, width=0.25, steps=1000, batch_size=32, n_critic=3, augment_to=0, lr=1e-4,
                    critic_lr=4e-4, diffaugment=("translation",), ema=0.99, eval_every=250, fid_samples=64, seed=0)
    untrained = generate(new_state("sdg", 16, cfg).sampler(), 64, 32, seed=1)
    state = train_gan(blobs, "sdg", cfg, score=score)
    fids = [h["fid"] for h in state.history if "fid" in h]
    assert len(fids) == 4 and state.best["fid"] < 0.5 * score(untrained)["fid"], (score(untrained)["fid"], fids)
    drawn = generate(state.sampler(), 64, 32, seed=5)
    assert (_blob_contrast(blobs) > 40).all() and (_blob_contrast(untrained) < 40).all()
    assert (_blob_contrast(drawn) > 40).mean() >= 0.5, _blob_contrast(drawn)


def test_fid_is_zero_on_itself_and_grows_with_noise():
    from smh_ml.config.schema import TrainConfig
    from smh_ml.models import build
    from smh_ml.synthetic.fid import DomainFeatures, gan_scores
    from smh_ml.training.loop import fit, seed_everything

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


def test_recall_and_coverage_tell_a_collapsed_generator_from_a_faithful_one():
    """Features of a faithful generator cover the real ones as a second real half does; a
    generator that draws one mode (small jitter round one real sample) recalls few of them."""
    from smh_ml.synthetic.coverage import manifold_scores

    rng = np.random.default_rng(0)
    real = torch.from_numpy(rng.normal(0, 1, (200, 8)))
    faithful = torch.from_numpy(rng.normal(0, 1, (300, 8)))
    collapsed = real[:1] + torch.from_numpy(rng.normal(0, 0.05, (300, 8)))
    good, bad = manifold_scores(real, faithful), manifold_scores(real, collapsed)
    assert good["recall"] > 0.8 and good["coverage"] > 0.8 and good["precision"] > 0.8
    assert bad["recall"] < 0.05 and bad["coverage"] < 0.15  # the real balls round its one mode
    assert bad["precision"] > 0.9  # each collapsed sample is realistic: FID-like fidelity alone misses it
    with pytest.raises(ValueError, match="at least two"):
        manifold_scores(real[:1], faithful)


def test_the_gate_refuses_a_set_under_the_recall_floor_as_a_content_failure():
    from smh_ml.synthetic.gan.experiment import gate_settings, recall_floor
    from smh_ml.synthetic.gate import check_synthetic

    cfg = GanConfig()
    scores = {"real_vs_real": [{"fid": 10.0, "recall": 0.9}], "augmented_vs_real": [{"fid": 20.0, "recall": 0.95}]}
    assert recall_floor(cfg, scores) == pytest.approx(0.45)
    assert recall_floor(dataclasses.replace(cfg, gate_recall_factor=0.0), scores) is None
    assert recall_floor(cfg, {"real_vs_real": [{"fid": 10.0}]}) is None  # scored before recall existed
    settings = gate_settings(cfg, scores)
    rng = np.random.default_rng(0)
    real = np.clip(rng.normal(120, 25, (50, 32, 32)), 0, 255).astype(np.uint8)
    varied = np.clip(rng.normal(120, 25, (64, 32, 32)), 0, 255).astype(np.uint8)  # passes the pixel checks
    refused = check_synthetic(varied, real, settings, fid=15.0, recall=0.2)
    assert not refused.passed and not refused.content_passed and refused.recall == 0.2
    assert "recall 0.20 < 0.45" in " ".join(refused.reasons)
    assert check_synthetic(varied, real, settings, fid=15.0, recall=0.8).passed


def test_gan_scores_carry_the_manifold_measures_only_when_asked():
    from smh_ml.models import build
    from smh_ml.synthetic.fid import DomainFeatures, gan_scores

    x, _ = toy_set(n_per_class=16, size=16)
    extractor = DomainFeatures(build("baseline_cnn", 3, 16).eval())
    warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
    full = gan_scores(x, x[::-1].copy(), extractor, "domain", kid_subsets=5)
    assert full["recall"] == pytest.approx(1.0) and full["coverage"] == pytest.approx(1.0)
    assert "recall" not in gan_scores(x, x, extractor, "domain", kid_subsets=5, manifold=False)

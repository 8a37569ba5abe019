"""scm-bench prepare: CIFAR-10 / ImageNet folders / SD-VAE latents -> prepared folders, read back memory-mapped.

Everything is built in tmp_path (a fake CIFAR-10 archive, a fake ImageNet tree, a tiny random AutoencoderKL), so
the file needs no downloads and runs in seconds.
"""
import io
import json
import pickle
import socket
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from harness.data.latents import LATENT_MEAN, LATENT_STD, decode_latents, encode_latents, load_vae
from harness.data.prepared import PreparedImages, load_prepared
from harness.tools.prepare import (center_crop, imagenet_images, prepare_cifar10, prepare_imagenet64,
                                   prepare_imagenet512_latents)

PER_BATCH = 4  # images in each fake CIFAR-10 batch


# ---- fakes ---------------------------------------------------------------------------------------------------------

def cifar_batches(seed: int = 0) -> list[dict]:
    """Five batches shaped like the real pickles: b"data" uint8 [n, 3072], b"labels" a list of ints."""
    rng = np.random.default_rng(seed)
    return [{b"batch_label": b"training batch", b"data": rng.integers(0, 256, (PER_BATCH, 3072), dtype=np.uint8),
             b"labels": [int(v) for v in rng.integers(0, 10, PER_BATCH)]} for _ in range(5)]


def write_cifar_archive(path, batches, skip: str | None = None):
    with tarfile.open(path, "w:gz") as tar:
        members = [("cifar-10-batches-py/batches.meta", {b"label_names": [b"airplane"]})]  # a member we never need
        members += [(f"cifar-10-batches-py/data_batch_{i + 1}", batch) for i, batch in enumerate(batches)]
        for name, content in members:
            if skip and name.endswith(skip):
                continue
            data = pickle.dumps(content, protocol=2)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_cifar_folder(folder, batches):
    folder.mkdir(parents=True)
    for i, batch in enumerate(batches):
        (folder / f"data_batch_{i + 1}").write_bytes(pickle.dumps(batch, protocol=2))
    return folder


def write_image(path, size, seed, mode="RGB"):
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def fake_imagenet(root):
    """Two classes (created out of order) with JPEG / PNG images of several sizes, plus files to be ignored."""
    for name in ("n02", "n01"):
        (root / name).mkdir(parents=True)
    write_image(root / "n01" / "b.JPEG", (300, 200), 1)
    write_image(root / "n01" / "a.png", (70, 90), 2)
    write_image(root / "n02" / "c.jpg", (90, 70), 3, mode="L")
    (root / "n02" / "notes.txt").write_text("not an image")
    (root / ".cache").mkdir()
    return root


@pytest.fixture(scope="module")
def tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=4, norm_num_groups=4,
                        sample_size=64)
    return vae.eval().requires_grad_(False)


# ---- CIFAR-10 ------------------------------------------------------------------------------------------------------

def check_cifar_output(out, batches):
    images = np.load(out / "images.npy")
    labels = np.load(out / "labels.npy")
    meta = json.loads((out / "dataset.json").read_text())
    assert images.dtype == np.uint8 and images.shape == (5 * PER_BATCH, 3, 32, 32)
    assert labels.dtype == np.int64 and labels.tolist() == sum((b[b"labels"] for b in batches), [])
    assert meta["kind"] == "pixels" and meta["shape"] == [3, 32, 32] and meta["count"] == 5 * PER_BATCH
    assert meta["num_classes"] == 10 and meta["name"] == "cifar10"
    rows = np.concatenate([b[b"data"] for b in batches])
    for i, c, y, x in [(0, 0, 0, 0), (5, 1, 7, 30), (19, 2, 31, 31), (11, 2, 16, 3)]:
        assert images[i, c, y, x] == rows[i, c * 1024 + y * 32 + x]


def test_cifar10_from_archive(tmp_path):
    batches = cifar_batches()
    out = prepare_cifar10(write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", batches), tmp_path / "out",
                          quiet=True)
    check_cifar_output(out, batches)
    assert not (tmp_path / "out.partial").exists()


@pytest.mark.parametrize("give_parent", [False, True])
def test_cifar10_from_extracted_folder(tmp_path, give_parent):
    batches = cifar_batches(1)
    folder = write_cifar_folder(tmp_path / "cifar-10-batches-py", batches)
    out = prepare_cifar10(tmp_path if give_parent else folder, tmp_path / "out", quiet=True)
    check_cifar_output(out, batches)


def test_cifar10_bad_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="CIFAR-10 python version.*--source"):
        prepare_cifar10(tmp_path / "nowhere.tar.gz", tmp_path / "out", quiet=True)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not the CIFAR-10 python archive"):
        prepare_cifar10(text, tmp_path / "out", quiet=True)
    partial = write_cifar_archive(tmp_path / "partial.tar.gz", cifar_batches(), skip="data_batch_5")
    with pytest.raises(ValueError, match="no data_batch_5"):
        prepare_cifar10(partial, tmp_path / "out", quiet=True)
    evil = tmp_path / "evil" / "cifar-10-batches-py"
    write_cifar_folder(evil, cifar_batches())
    (evil / "data_batch_3").write_bytes(pickle.dumps({b"data": print}))  # a pickle that names a function
    with pytest.raises(ValueError, match="not a CIFAR-10 python batch"):
        prepare_cifar10(evil, tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists()


def test_refuses_to_overwrite_unless_asked(tmp_path):
    first, second = cifar_batches(0), cifar_batches(1)
    out = prepare_cifar10(write_cifar_archive(tmp_path / "a.tar.gz", first), tmp_path / "out", quiet=True)
    archive = write_cifar_archive(tmp_path / "b.tar.gz", second)
    with pytest.raises(FileExistsError, match="already exists.*--overwrite"):
        prepare_cifar10(archive, out, quiet=True)
    check_cifar_output(out, first)
    prepare_cifar10(archive, out, overwrite=True, quiet=True)
    check_cifar_output(out, second)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.gz", "b.tar.gz", "out"]


# ---- ImageNet pixels -----------------------------------------------------------------------------------------------

def test_center_crop_sizes_and_colour():
    for size in [(300, 200), (70, 90), (16, 16), (1000, 40), (17, 500)]:
        crop = center_crop(Image.new("RGB", size, (200, 30, 90)), 16)
        assert crop.size == (16, 16) and crop.mode == "RGB"
        assert (np.asarray(crop) == (200, 30, 90)).all()
    assert center_crop(Image.new("L", (40, 50), 77), 16).mode == "RGB"


def test_center_crop_takes_the_middle_and_box_halves():
    wide = np.random.default_rng(0).integers(0, 256, (16, 48, 3), dtype=np.uint8)
    assert (np.asarray(center_crop(Image.fromarray(wide), 16)) == wide[:, 16:32]).all()  # no resize needed
    # 64 -> 16 is two box halvings: on an image of solid 4x4 blocks they give back exactly one pixel per block
    # (a single bicubic 4x downscale would blend neighbouring blocks).
    small = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    blocks = np.repeat(np.repeat(small, 4, axis=0), 4, axis=1)
    assert (np.asarray(center_crop(Image.fromarray(blocks), 16)) == small).all()


def test_imagenet_images_sorted_classes(tmp_path):
    root = fake_imagenet(tmp_path / "train")
    assert [(p.relative_to(root).as_posix(), label) for p, label in imagenet_images(root)] == \
        [("n01/a.png", 0), ("n01/b.JPEG", 0), ("n02/c.jpg", 1)]
    with pytest.raises(FileNotFoundError, match="ImageNet source .* not found"):
        imagenet_images(tmp_path / "missing")
    (tmp_path / "empty" / "n01").mkdir(parents=True)
    with pytest.raises(ValueError, match="hold no .jpg"):
        imagenet_images(tmp_path / "empty")
    (tmp_path / "flat").mkdir()
    with pytest.raises(ValueError, match="no class folders"):
        imagenet_images(tmp_path / "flat")


def test_prepare_imagenet64(tmp_path):
    root = fake_imagenet(tmp_path / "train")
    out = prepare_imagenet64(root, tmp_path / "out", resolution=16, quiet=True)
    images, labels = np.load(out / "images.npy"), np.load(out / "labels.npy")
    meta = json.loads((out / "dataset.json").read_text())
    assert images.dtype == np.uint8 and images.shape == (3, 3, 16, 16)
    assert labels.tolist() == [0, 0, 1]
    assert meta == {"name": "imagenet64", "kind": "pixels", "shape": [3, 16, 16], "count": 3, "num_classes": 2,
                    "source": str(root.resolve())}
    for i, (path, _) in enumerate(imagenet_images(root)):
        with Image.open(path) as image:
            assert (images[i] == np.asarray(center_crop(image, 16)).transpose(2, 0, 1)).all()


def test_failure_midway_leaves_nothing_half_written(tmp_path):
    root = fake_imagenet(tmp_path / "train")
    (root / "n02" / "d.JPEG").write_bytes(b"\xff\xd8 this is not really a jpeg")
    with pytest.raises(ValueError, match="cannot read image .*d.JPEG"):
        prepare_imagenet64(root, tmp_path / "out", resolution=16, quiet=True)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    # With --overwrite, a failed prepare leaves the old folder as it was.
    old = prepare_cifar10(write_cifar_archive(tmp_path / "c.tar.gz", cifar_batches()), tmp_path / "old", quiet=True)
    with pytest.raises(ValueError, match="cannot read image"):
        prepare_imagenet64(root, old, resolution=16, overwrite=True, quiet=True)
    check_cifar_output(old, cifar_batches())
    assert not (tmp_path / "old.partial").exists()


# ---- latents -------------------------------------------------------------------------------------------------------

def expected_latents(vae, pixels: np.ndarray) -> torch.Tensor:
    """The sCM normalization written out directly: (posterior mean - mu_c) * 0.5 / sigma_c, then the posterior's std
    scaled alike, std * 0.5 / sigma_c (the normalization is affine)."""
    with torch.no_grad():
        posterior = vae.encode(torch.from_numpy(pixels).float() / 127.5 - 1).latent_dist
    mu = torch.tensor(LATENT_MEAN).view(1, 4, 1, 1)
    sigma = torch.tensor(LATENT_STD).view(1, 4, 1, 1)
    return torch.cat([(posterior.mean - mu) * 0.5 / sigma, posterior.std * 0.5 / sigma], dim=1)


def test_prepare_latents_match_the_formula(tmp_path, tiny_vae):
    root = fake_imagenet(tmp_path / "train")
    out = prepare_imagenet512_latents(root, tmp_path / "out", vae=tiny_vae, resolution=64, batch_size=2, quiet=True)
    latents = np.load(out / "images.npy")
    meta = json.loads((out / "dataset.json").read_text())
    assert latents.dtype == np.float16 and latents.shape == (3, 8, 8, 8)  # per latent: posterior mean and std
    assert np.load(out / "labels.npy").tolist() == [0, 0, 1]
    assert meta["kind"] == "latents" and meta["shape"] == [4, 8, 8] and meta["resolution"] == 64 and meta["posterior"]
    assert meta["latent_mean"] == list(LATENT_MEAN) and meta["latent_std"] == list(LATENT_STD)
    assert meta["sigma_data"] == 0.5 and meta["num_classes"] == 2 and meta["count"] == 3
    crops = []
    for path, _ in imagenet_images(root):
        with Image.open(path) as image:
            crops.append(np.asarray(center_crop(image, 64)).transpose(2, 0, 1))
    expected = expected_latents(tiny_vae, np.stack(crops))
    torch.testing.assert_close(torch.from_numpy(latents).float(), expected, atol=2e-3, rtol=2e-3)


def test_decode_inverts_the_normalization_exactly(tiny_vae):
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    latents = encode_latents(tiny_vae, images)
    assert latents.shape == (2, 4, 8, 8) and latents.dtype == torch.float32
    with torch.no_grad():
        direct = tiny_vae.decode(tiny_vae.encode(images).latent_dist.mean).sample.clamp(-1, 1)
    torch.testing.assert_close(decode_latents(tiny_vae, latents), direct, atol=1e-5, rtol=1e-5)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_load_vae_offline(tmp_path, monkeypatch, tiny_vae, no_network):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(FileNotFoundError, match="huggingface-cli download nobody/no-such-vae") as error:
        load_vae("nobody/no-such-vae")
    assert "\n" not in str(error.value)
    with pytest.raises(FileNotFoundError, match="--vae DIR") as error:
        load_vae(str(tmp_path / "no-vae-here"))
    assert "stabilityai/sd-vae-ft-mse" in str(error.value) and "\n" not in str(error.value)
    tiny_vae.save_pretrained(tmp_path / "vae")
    loaded = load_vae(str(tmp_path / "vae"))
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    torch.testing.assert_close(loaded.encoder.conv_in.weight, tiny_vae.encoder.conv_in.weight)


def test_latents_check_the_vae_before_reading_images(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    root = fake_imagenet(tmp_path / "train")
    (root / "n01" / "z.JPEG").write_bytes(b"corrupt")  # would fail with ValueError if images were read first
    with pytest.raises(FileNotFoundError, match="--vae"):
        prepare_imagenet512_latents(root, tmp_path / "out", vae=str(tmp_path / "missing-vae"), quiet=True)
    assert not (tmp_path / "out").exists()


# ---- reading back --------------------------------------------------------------------------------------------------

def test_load_prepared_pixels_are_memory_mapped(tmp_path):
    batches = cifar_batches()
    out = prepare_cifar10(write_cifar_archive(tmp_path / "c.tar.gz", batches), tmp_path / "out", quiet=True)
    data = load_prepared(out)
    rows = torch.from_numpy(np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32)).float()
    assert isinstance(data.images, PreparedImages) and isinstance(data.images.array, np.memmap)
    assert len(data.images) == 20 and data.images.shape == torch.Size([20, 3, 32, 32]) and data.shape == (3, 32, 32)
    assert data.num_classes == 10 and data.labels.dtype == torch.long
    assert data.labels.tolist() == sum((b[b"labels"] for b in batches), [])
    moved = data.to("cpu")
    assert isinstance(moved.images, PreparedImages) and moved.images.device == torch.device("cpu")
    # What the trainer does: random indices on the images' device, then index images and labels alike.
    index = torch.randint(len(moved.images), (8,), generator=torch.Generator().manual_seed(0))
    index = index.to(moved.images.device)
    batch = moved.images[index]
    assert batch.dtype == torch.float32 and batch.shape == (8, 3, 32, 32)
    assert batch.min() >= -1 and batch.max() <= 1
    torch.testing.assert_close(batch, rows[index] / 127.5 - 1)
    torch.testing.assert_close(moved.images[3], rows[3] / 127.5 - 1)
    torch.testing.assert_close(moved.images[2:5], rows[2:5] / 127.5 - 1)


def test_load_prepared_latents(tmp_path, tiny_vae):
    root = fake_imagenet(tmp_path / "train")
    out = prepare_imagenet512_latents(root, tmp_path / "out", vae=tiny_vae, resolution=64, quiet=True)
    data = load_prepared(out)
    stored = torch.from_numpy(np.load(out / "images.npy")).float()
    assert data.shape == (4, 8, 8) and data.num_classes == 2
    torch.testing.assert_close(data.images[torch.tensor([2, 0])], stored[[2, 0], :4], atol=0, rtol=0)  # the means


def test_training_draws_each_latent_from_its_posterior(tmp_path, tiny_vae):
    """As EDM2: every read of a training sample is a fresh draw mean + std * eps. 4000 reads of one latent: their
    mean and std per element match the stored posterior (5 and 9 standard errors); two reads differ."""
    root = fake_imagenet(tmp_path / "train")
    out = prepare_imagenet512_latents(root, tmp_path / "out", vae=tiny_vae, resolution=64, quiet=True)
    stored = torch.from_numpy(np.load(out / "images.npy")).float()[1]
    mean, std = stored[:4], stored[4:]
    assert float(std.min()) > 0
    torch.manual_seed(0)
    draws = load_prepared(out, draw_latents=True).images[torch.ones(4000, dtype=torch.long)]
    assert draws.shape == (4000, 4, 8, 8)
    n = len(draws)
    assert float(((draws.mean(0) - mean) / std).abs().max()) < 5 / n ** 0.5
    assert float((draws.std(0) / std - 1).abs().max()) < 9 / (2 * n) ** 0.5
    again = load_prepared(out, draw_latents=True).images[torch.tensor([1])]
    assert not torch.equal(again[0], draws[-1])


def test_latents_prepared_before_posteriors_still_load(tmp_path):
    """A data set of posterior means only (what prepare wrote before): read as stored, with or without draws."""
    folder = tmp_path / "old"
    folder.mkdir()
    means = np.random.default_rng(0).standard_normal((3, 4, 8, 8)).astype(np.float16)
    np.save(folder / "images.npy", means)
    np.save(folder / "labels.npy", np.array([0, 1, 1]))
    (folder / "dataset.json").write_text(json.dumps({"name": "imagenet512-latents", "kind": "latents",
                                                     "shape": [4, 8, 8], "count": 3, "num_classes": 2}))
    for draw in (False, True):
        data = load_prepared(folder, draw_latents=draw)
        assert data.shape == (4, 8, 8)
        torch.testing.assert_close(data.images[torch.tensor([2])], torch.from_numpy(means[[2]]).float())


def test_load_prepared_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="run scm-bench prepare NAME --source"):
        load_prepared(tmp_path / "nothing")
    out = prepare_cifar10(write_cifar_archive(tmp_path / "c.tar.gz", cifar_batches()), tmp_path / "out", quiet=True)
    (out / "labels.npy").unlink()
    with pytest.raises(FileNotFoundError, match="has no labels.npy"):
        load_prepared(out)


# ---- the command ---------------------------------------------------------------------------------------------------

@pytest.fixture
def cli():
    from harness.cli import app

    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["prepare", *map(str, args)])


def test_cli_prepare(tmp_path, cli):
    archive = write_cifar_archive(tmp_path / "c.tar.gz", cifar_batches())
    result = cli("cifar10", "--source", archive, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "prepared cifar10: 20 pixels of shape 3x32x32" in result.stdout and str(tmp_path / "out") in result.stdout
    again = cli("cifar10", "--source", archive, "--out", tmp_path / "out")
    assert again.exit_code == 2 and again.stderr.startswith("error: ") and "--overwrite" in again.stderr
    assert cli("cifar10", "--source", archive, "--out", tmp_path / "out", "--overwrite").exit_code == 0


@pytest.mark.parametrize("args, phrase", [
    (["cifar10", "--source", "{tmp}/missing.tar.gz"], "CIFAR-10 python version"),
    (["imagenet64", "--source", "{tmp}/no-train"], "ImageNet source"),
    (["mnist", "--source", "{tmp}"], "choose one of cifar10, imagenet64, imagenet512-latents"),
    (["cifar10", "--source", "{tmp}", "--vae", "x"], "--vae applies to imagenet512-latents only"),
])
def test_cli_errors_are_one_line(tmp_path, cli, args, phrase):
    result = cli(*[a.format(tmp=tmp_path) for a in args], "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and phrase in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()

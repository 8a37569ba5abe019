"""The sCM paper's ImageNet 512 latent space: SD VAE latents, normalized per channel to std sigma_data.

latent = (l - mu_c) * sigma_data / sigma_c, with l the VAE posterior's latent for an image in [-1, 1].
"""
import os
import warnings

# Per-channel mean and std of the raw SD VAE latents of ImageNet 512 for images in [-1, 1]: sCM App. G.1 (its step
# 4 of preprocessing; EDM2's own values, training/encoders.py, assume images in [0, 1], which the paper corrects).
LATENT_MEAN = (1.56, -0.695, 0.483, 0.729)
LATENT_STD = (5.27, 5.91, 4.21, 4.31)
DEFAULT_VAE = "stabilityai/sd-vae-ft-mse"


def _is_repo_id(name: str) -> bool:
    """Whether `name` is a hub id (owner/name) rather than a local path."""
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~")) and not os.path.exists(name)


def _missing_vae_message(name: str) -> str:
    repo = name if _is_repo_id(name) else DEFAULT_VAE  # a bad local path: suggest the paper's VAE
    cache = os.environ.get("HF_HOME", "~/.cache/huggingface")
    return (f"VAE {name!r} is neither a local folder with config.json and weights nor in the Hugging Face cache "
            f"({cache}); on a machine with internet run `huggingface-cli download {repo} --local-dir DIR`, copy DIR "
            f"here and pass --vae DIR (or copy that machine's Hugging Face cache into HF_HOME)")


TINY_RANDOM_VAE = "tiny-random"  # a stand-in for --smoke runs and tests: the same class, 8 channels, random weights


def tiny_random_vae(seed: int = 0):
    """An AutoencoderKL of the SD VAE's shape (4 latent channels, 8x downsampling) but 8 channels wide, randomly
    initialised from `seed`: exercises the latent path with no download."""
    import torch
    from diffusers import AutoencoderKL

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, latent_channels=4,
                            norm_num_groups=4, sample_size=64)
    return vae.eval().requires_grad_(False)


def load_vae(name_or_path: str, device="cpu"):
    """The AutoencoderKL from a local folder or the Hugging Face cache, frozen, in eval mode; never downloads."""
    from diffusers import AutoencoderKL

    if name_or_path == TINY_RANDOM_VAE:
        return tiny_random_vae().to(device)

    try:
        with warnings.catch_warnings():  # diffusers passes huggingface_hub a deprecated argument; not ours to fix
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
            # low_cpu_mem_usage=False: the fast path needs `accelerate`; without it diffusers prints a long notice.
            vae = AutoencoderKL.from_pretrained(str(name_or_path), local_files_only=True, low_cpu_mem_usage=False)
    except OSError:
        raise FileNotFoundError(_missing_vae_message(str(name_or_path))) from None
    return vae.to(device).eval().requires_grad_(False)


def _channel_stats(like, channels: int):
    """mu_c and sigma_c as [1, C, 1, 1] tensors on `like`'s device and dtype."""
    import torch

    if channels != len(LATENT_MEAN):
        raise ValueError(f"the VAE has {channels} latent channels but the sCM normalization is for "
                         f"{len(LATENT_MEAN)}; use an SD VAE such as {DEFAULT_VAE}")
    mean = torch.tensor(LATENT_MEAN, device=like.device, dtype=like.dtype).view(1, -1, 1, 1)
    std = torch.tensor(LATENT_STD, device=like.device, dtype=like.dtype).view(1, -1, 1, 1)
    return mean, std


def _vae_dtype_device(vae):
    parameter = next(vae.parameters())
    return parameter.dtype, parameter.device


def encode_posterior(vae, images, sigma_data: float = 0.5):
    """Images [B, 3, H, W] in [-1, 1] -> the VAE posterior N(mean, std^2) of each latent, normalized: float32
    [B, 8, H/8, W/8], the 4 mean channels then the 4 std channels. As EDM2 keeps them: a latent is drawn from the
    posterior each time a training sample is read (`draw_latents`)."""
    import torch

    dtype, device = _vae_dtype_device(vae)
    with torch.no_grad():
        posterior = vae.encode(images.to(device, dtype)).latent_dist
        raw_mean, raw_std = posterior.mean.float(), posterior.std.float()
    mean, std = _channel_stats(raw_mean, raw_mean.shape[1])
    # the normalization is affine, so the normalized latent's posterior is N((mu - m_c) sd / s_c, (std sd / s_c)^2)
    return torch.cat([(raw_mean - mean) * (sigma_data / std), raw_std * (sigma_data / std)], dim=1)


def encode_latents(vae, images, sigma_data: float = 0.5):
    """Images [B, 3, H, W] in [-1, 1] -> normalized float32 latents [B, 4, H/8, W/8] (the posterior means)."""
    return encode_posterior(vae, images, sigma_data).chunk(2, dim=1)[0]


def draw_latents(posterior, generator=None):
    """Latents drawn from stored posteriors [B, 8, h, w] (means, stds): mean + std * eps, eps ~ N(0, I)."""
    import torch

    mean, std = posterior.chunk(2, dim=-3)
    return mean + std * torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)


def decode_latents(vae, latents, sigma_data: float = 0.5):
    """The exact inverse of encode_latents' normalization, then the VAE decoder: images in [-1, 1]."""
    import torch

    dtype, device = _vae_dtype_device(vae)
    latents = latents.to(device, torch.float32)
    mean, std = _channel_stats(latents, latents.shape[1])
    raw = latents * (std / sigma_data) + mean
    with torch.no_grad():
        images = vae.decode(raw.to(dtype)).sample
    return images.float().clamp(-1, 1)

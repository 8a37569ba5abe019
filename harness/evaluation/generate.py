"""Generation for evaluation: sample i has its own seed, so it is the same image however the work is split.

Sample i draws its starting noise z and every later noise its method's sampler needs (e.g. the fresh noise of a
later consistency step) from one generator seeded with seed_i = recipe seed x 10^7 + i (mod 2^32: torch's CPU
generator keeps 32 bits of a seed, so recipe seeds up to 429 never share a sample among their first 10 million);
its class label is i // samples_per_class. The samples are cut into shards of consecutive seeds; each shard's
features are saved on their own, so an interrupted evaluation resumes at the first missing shard, and
data-parallel ranks take every world_size-th shard.
"""
import torch

from scm.methods import Method, Setting

SEED_STRIDE = 10 ** 7


def sample_seed(recipe_seed: int, index: int) -> int:
    return (recipe_seed * SEED_STRIDE + index) % 2 ** 32


def sample_noise(seeds, shape, later: int, sigma_data: float):
    """z ~ N(0, sd^2 I) and `later` standard-normal tensors per sample, each sample from its own seed."""
    zs, fresh = [], [[] for _ in range(later)]
    for seed in seeds:
        g = torch.Generator().manual_seed(int(seed))
        zs.append(torch.randn(shape, generator=g))
        for k in range(later):
            fresh[k].append(torch.randn(shape, generator=g))
    stack = torch.stack if zs else None
    return stack(zs) * sigma_data, [stack(f) for f in fresh]


def shard_ranges(count: int, shard_size: int) -> list[tuple[int, int]]:
    return [(start, min(start + shard_size, count)) for start in range(0, count, shard_size)]


def generate(method: Method, net, setting: Setting, indices, labels, shape, recipe_seed: int,
             batch_size: int = 512) -> torch.Tensor:
    """Samples (data space, on the CPU) for these sample indices; labels: every sample's label, or None."""
    where = next(net.parameters()).device
    later = method.later_noises(setting)
    outs = []
    for start in range(0, len(indices), batch_size):
        chunk = list(indices[start: start + batch_size])
        z, fresh = sample_noise([sample_seed(recipe_seed, i) for i in chunk], shape, later, method.sigma_data)
        y = labels[chunk].to(where) if labels is not None else None
        with torch.no_grad():
            x = method.sample(net, z.to(where), y, setting, [f.to(where) for f in fresh])
        outs.append(x.cpu())
    return torch.cat(outs)

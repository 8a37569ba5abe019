"""Generation for evaluation: sample i has its own seed, so it is the same image however the work is split.

Sample i draws its starting noise z and the fresh noise of every later consistency step from one generator seeded
with seed_i = recipe seed x 10^7 + i (mod 2^32: torch's CPU generator keeps 32 bits of a seed, so recipe seeds up to
429 never share a sample among their first 10 million); its class label is i // samples_per_class. The samples are cut into shards of
consecutive seeds; each shard's features are saved on their own, so an interrupted evaluation resumes at the first
missing shard, and data-parallel ranks take every world_size-th shard.
"""
from dataclasses import dataclass

SEED_STRIDE = 10 ** 7


@dataclass(frozen=True)
class Setting:
    """One way to sample: the teacher's ODE solver at its CFG scale, or consistency sampling at an NFE (with the
    scale told to a student that takes it)."""
    sampler: str
    steps: int
    guidance: float = 1.0
    told: bool = False  # the guidance scale is a network input, not CFG

    @property
    def name(self) -> str:
        told = f"-guidance-{self.guidance:g}" if self.told else ""
        cfg = f"-cfg-{self.guidance:g}" if self.cfg != 1.0 else ""
        return f"{self.sampler}-{self.steps}{cfg}{told}"

    @property
    def cfg(self) -> float:
        return self.guidance if self.sampler != "consistency" else 1.0

    def nfe(self, conditional: bool) -> int:
        """Network evaluations per sample: DPM-Solver-2S 2n - 1, Euler n, consistency n; CFG doubles them."""
        per_pass = 2 * self.steps - 1 if self.sampler == "dpm-solver-2s" else self.steps
        return per_pass * (2 if self.cfg != 1.0 and conditional else 1)


def sample_seed(recipe_seed: int, index: int) -> int:
    return (recipe_seed * SEED_STRIDE + index) % 2 ** 32


def sample_noise(seeds, shape, later_steps: int, sigma_data: float):
    """z ~ N(0, sd^2 I) and `later_steps` standard-normal tensors per sample, each sample from its own seed."""
    import torch

    zs, fresh = [], [[] for _ in range(later_steps)]
    for seed in seeds:
        g = torch.Generator().manual_seed(int(seed))
        zs.append(torch.randn(shape, generator=g))
        for k in range(later_steps):
            fresh[k].append(torch.randn(shape, generator=g))
    stack = torch.stack if zs else None
    return stack(zs) * sigma_data, [stack(f) for f in fresh]


def shard_ranges(count: int, shard_size: int) -> list[tuple[int, int]]:
    return [(start, min(start + shard_size, count)) for start in range(0, count, shard_size)]


def generate(net, setting: Setting, indices, labels, shape, recipe_seed: int, sigma_data: float,
             batch_size: int = 512):
    """Samples (data space, on the CPU) for these sample indices; labels: every sample's label, or None."""
    import torch
    from scm.sampling import consistency_sample, consistency_times, guided, teacher_sample

    where = next(net.parameters()).device
    later = len(consistency_times(setting.steps)) - 1 if setting.sampler == "consistency" else 0
    outs = []
    for start in range(0, len(indices), batch_size):
        chunk = list(indices[start: start + batch_size])
        z, fresh = sample_noise([sample_seed(recipe_seed, i) for i in chunk], shape, later, sigma_data)
        y = labels[chunk].to(where) if labels is not None else None
        if setting.told:
            def F(x, t, y=y):
                return net(x, t, y, guidance=setting.guidance)
        else:
            F = guided(net, y, setting.cfg)
        with torch.no_grad():
            if setting.sampler == "consistency":
                x, _ = consistency_sample(F, z.to(where), setting.steps, sigma_data=sigma_data,
                                          noises=[f.to(where) for f in fresh])
            else:
                x, _ = teacher_sample(F, z.to(where), setting.sampler, setting.steps, sigma_data)
        outs.append(x.cpu())
    return torch.cat(outs)

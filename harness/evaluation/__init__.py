"""The evaluation layer: per-sample-seed generation through a method's sampler, sharded and resumable; feature
extractors (the digits classifier, clean-fid's Inception, DINOv2); Frechet distance, KID; reference statistics."""

"""Data augmentation for few-shot scenarios (the third kind of meta-learning in PRODUCT.md).

A 5-shot support set is tiny, and a meta-init trained on a few dozen scenarios can overfit to them;
this package makes more of both, and the bench's ablation (`metalora bench ... --augment`) measures what
each buys before anything is switched on by default.

- text.py        label-preserving text perturbations of the support set (nlpaug: word dropout, swaps,
                 replacement by neighbours in the backbone's own input-embedding space)
- paraphrase.py  paraphrases written by the offline GPT backbone (SmolLM2; extra `gpt`)
- calibration.py training-class feature statistics stored with a meta-init, and support features sampled
                 from distributions calibrated with them (Yang et al., ICLR 2021)
- support.py     the feature-level hooks of the adaptation loop (calibrated samples, mixup)
- tasks.py       task augmentation of meta-training (MLTI interpolation, merged label sets); the sampler in
                 metalora/meta/episodes.py decides when
- ablation.py    the bench's `--augment` settings and their paired comparison with `meta`

Settings live in metalora/config.py: AdaptConfig.augment (AugmentConfig), the EpisodeConfig task fields,
MetaTrainConfig.feature_stats.
"""

"""Training: the models and learned parts longvid ships, each a seeded, resumable recipe.

- `tiny`: longvid-tiny 2 on suite v2 (``longvid train tiny``), through the engine's own forward;
- `tiny_v1`: longvid-tiny v1 on suite v1, kept reproducible (``python -m longvid.train.tiny_v1``);
- `citr` + `citr_labels`: CITR's retaining heads on a frozen model (``longvid train citr``);
- `tokenizer`: the line-level tokenizer both longvid-tiny versions use; `common`: what the cards share.
"""

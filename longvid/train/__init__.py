"""Training the learned methods: CITR's retaining heads (labels first: `longvid.train.citr_labels`), then QTSplus.

The trainer and the recipes land here, beside the labels, as the learned-method issues progress; longvid-tiny's own
recipe still lives in ``longvid/synth/train.py``.
"""

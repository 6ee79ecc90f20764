"""lmms-eval's entry point for longvid (``[project.entry-points."lmms_eval.models"]`` in pyproject.toml): the model
``longvid``. Kept free of torch and longvid imports: lmms-eval loads every plugin's manifest at start-up, and the
class module (`longvid.eval.lmms_model`) only when ``--model longvid`` is asked for."""


def manifests():
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id="longvid", simple_class_path="longvid.eval.lmms_model.LongVidLMMS")]

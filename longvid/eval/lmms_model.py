"""``--model longvid`` in lmms-eval: any longvid model and method behind lmms-eval's tasks.

    python -m lmms_eval --model longvid --model_args pretrained=/models/Qwen2.5-VL-7B-Instruct,method=evs,keep=0.25,\
fps=1,device=cuda,dtype=bfloat16 --tasks videomme --batch_size 1 --output_path logs/

Model args: ``pretrained`` (a checkpoint directory, or longvid-tiny), ``method`` (a preset or a composition such as
``uniform:0.5+evs:0.5``), ``keep`` / ``budget``, ``fps`` / ``frames`` / ``max_frames`` (default 1 fps), ``device``,
``dtype``, ``attn``, ``max_pixels``, ``chunk_size``. It is a "simple" lmms-eval model: each request's text is the
task's prompt and its visual the video path (one video per request; images are refused). Requests about the same
video are answered from one encode when the method is query-agnostic (a session), so a benchmark's video is decoded
and encoded once per run. ``max_new_tokens``, ``temperature`` (0 = greedy) and ``until`` come from the task; each
reply is cut at its first ``until`` string. Retention, visual/kept tokens and TTFT of every request go to
lmms-eval's throughput summary (``avg_retention``, ``avg_ttft``, ... in the results JSON) through its
``log_metrics`` hook.
"""

from __future__ import annotations

import time
from collections import defaultdict

from lmms_eval.api.instance import GenerationResult, TokenCounts
from lmms_eval.api.model import lmms
from lmms_eval.models.model_utils.gen_metrics import log_metrics


class LongVidLMMS(lmms):
    is_simple = True

    def __init__(self, pretrained: str = "longvid-tiny", method: str = "full", keep: float | None = None,
                 budget: int | None = None, fps: float | None = None, frames: int | None = None,
                 max_frames: int | None = None, device: str = "cpu", dtype: str = "auto", attn: str = "sdpa",
                 max_pixels: int | None = None, chunk_size: int = 8192, batch_size=1, **kwargs):
        super().__init__()
        import longvid
        from longvid.video.options import SamplingOptions

        unknown = set(kwargs) - {"max_batch_size"}
        if unknown:
            raise ValueError(f"unknown model_args for longvid: {', '.join(sorted(unknown))}; see "
                             "longvid/eval/lmms_model.py")
        self.lm = longvid.load(str(pretrained), device=device, dtype=dtype, attn_implementation=attn,
                               max_pixels=max_pixels)
        self.method = longvid.get_method(str(method), keep=None if keep is None else float(keep),
                                         budget=None if budget is None else int(budget))
        self.method.check_model(self.lm.adapter)
        fps = None if fps is None else float(fps)
        self.sampling = SamplingOptions(fps if fps is not None or frames is not None else 1.0,
                                        None if frames is None else int(frames),
                                        None if max_frames is None else int(max_frames))
        self.chunk_size = int(chunk_size)

    def generate_until(self, requests) -> list[GenerationResult]:
        from longvid.engine.decode import Sampling

        by_video = defaultdict(list)
        for i, request in enumerate(requests):
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            visuals = doc_to_visual(self.task_dict[task][split][doc_id])
            videos = [v for v in (visuals or []) if isinstance(v, str)]
            if len(videos) != 1 or len(visuals) != 1:
                raise ValueError(f"longvid answers about one video per request; {task} request {doc_id} has "
                                 f"{len(visuals or [])} visuals ({', '.join(type(v).__name__ for v in visuals or [])})")
            by_video[videos[0]].append((i, context, dict(gen_kwargs)))
        out: list[GenerationResult | None] = [None] * len(requests)
        for video, items in by_video.items():
            frames = self.lm.read(video, self.sampling)
            session = None if self.method.query_aware else self.lm.session(frames, method=self.method,
                                                                            chunk_size=self.chunk_size)
            for i, context, gen in items:
                t0 = time.perf_counter()
                max_new = int(gen.get("max_new_tokens", 128))
                temperature = float(gen.get("temperature", 0) or 0)
                sampling = Sampling(do_sample=True, temperature=temperature, top_p=float(gen.get("top_p") or 1.0)) \
                    if temperature > 0 and gen.get("do_sample", True) else None
                if session is not None:
                    answer = session.ask(context, max_new_tokens=max_new, sampling=sampling)
                else:
                    answer = self.lm.ask(frames, context, method=self.method, max_new_tokens=max_new,
                                         sampling=sampling, chunk_size=self.chunk_size)
                text = answer.text
                until = gen.get("until") or []
                for stop in [until] if isinstance(until, str) else until:
                    if stop and stop in text:
                        text = text[:text.index(stop)]
                s = answer.stats
                elapsed = time.perf_counter() - t0
                log_metrics(total_elapsed_time=elapsed, total_gen_tokens=len(answer.token_ids),
                            avg_speed=len(answer.token_ids) / elapsed if elapsed > 0 else 0.0,
                            additional_metrics={"retention": s.retention, "ttft": s.ttft,
                                                "visual_tokens": s.visual_tokens, "kept_tokens": s.kept_tokens,
                                                "kv_bytes": s.kv_bytes, "total_requests": 1})
                out[i] = GenerationResult(text=text, token_counts=TokenCounts(output_tokens=len(answer.token_ids)))
        return out

    def loglikelihood(self, requests):
        raise NotImplementedError("longvid generates answers; use a generate_until task (multiple-choice tasks "
                                  "that score log-likelihoods are not supported)")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("longvid does not run multi-round lmms-eval tasks; ask follow-up questions "
                                  "through a longvid session instead")

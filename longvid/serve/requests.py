"""Request bodies, read and checked field by field: every refusal is one line naming the JSON field, its value, the
constraint and the fix (HTTP 400), before any work is queued.

OpenAI chat fields: ``model``, ``messages`` (one user turn with one ``video_url`` part and its text; an optional
system turn), ``max_tokens`` / ``max_completion_tokens``, ``temperature`` (0, the default, is greedy), ``top_p``,
``seed``, ``stop``, ``n`` (1), ``stream``, ``stream_options.include_usage``. longvid's extra fields: ``method``,
``keep``, ``budget``, ``settings`` (the method's settings), ``fps``, ``frames``, ``max_frames``, ``start``, ``end``,
``keep_map`` (draw the kept-token map of this run). vLLM's ``media_io_kwargs: {"video": {"num_frames": N, "fps": F}}``
(what lmms-eval's ``openai`` model sends with ``pass_video_url``) stands for ``frames`` / ``fps`` when those are absent.
A request that names no method gets the server's (``longvid serve --method/--keep/--budget/--set``); its own ``keep``,
``budget`` and ``settings`` override the server's for that method. Other fields are ignored, as OpenAI-compatible
servers do, except those asking for what this server cannot do (``logprobs``, ``tools``), which are refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Integral, Real

from longvid.serve.errors import HTTPError

RUN_FIELDS = ("method", "keep", "budget", "settings", "fps", "frames", "max_frames", "start", "end")


@dataclass
class Limits:
    """Per-request limits of a server (its command-line options)."""

    max_frames: int = 512
    max_tokens: int = 1024
    max_question_chars: int = 8000


@dataclass
class RunOptions:
    """Which method, and how frames are sampled."""

    method: str = "full"
    keep: float | None = None
    budget: int | None = None
    settings: dict = field(default_factory=dict)
    fps: float | None = None
    frames: int | None = None
    max_frames: int | None = None
    start: float | None = None
    end: float | None = None
    frames_field: str = "frames"  # the JSON field ``frames`` came from, for errors

    def build_method(self):
        """The `Method` (raises the library's one-line ValueError, worded in JSON fields under ``interface(HTTP)``)."""
        from longvid.methods.registry import get_method

        return get_method(self.method, keep=self.keep, budget=self.budget, **self.settings)

    def sampling(self, limits: Limits):
        """SamplingOptions, with the server's frame limit as ``max_frames`` unless a smaller one was asked for."""
        from longvid.video.options import SamplingOptions

        if self.frames is not None and self.frames > limits.max_frames:
            raise HTTPError(400, f'"{self.frames_field}": {self.frames} is more than this server samples per video '
                                 f"({limits.max_frames}, --max-frames); pass at most {limits.max_frames}",
                            self.frames_field)
        cap = limits.max_frames if self.max_frames is None else min(self.max_frames, limits.max_frames)
        return SamplingOptions(self.fps, self.frames, cap, self.start, self.end)


@dataclass
class Generation:
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False

    def sampling(self):
        from longvid.engine.decode import Sampling

        if self.temperature == 0:
            return None  # greedy
        return Sampling(do_sample=True, temperature=self.temperature, top_p=self.top_p, seed=self.seed)


@dataclass
class Chat:
    """A checked chat completion request."""

    model: str | None
    video_url: str
    question: str
    system: str | None
    run: RunOptions
    gen: Generation
    keep_map: bool = False


def body_object(body) -> dict:
    if not isinstance(body, dict):
        raise HTTPError(400, f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def chat_request(body, limits: Limits, default: RunOptions | None = None) -> Chat:
    body = body_object(body)
    for unsupported in ("logprobs", "tools", "functions", "tool_choice", "audio"):
        if body.get(unsupported) not in (None, False, [], "none"):
            raise HTTPError(400, f'"{unsupported}" is not supported by this server; leave it out', unsupported)
    n = body.get("n", 1)
    if n not in (None, 1) or isinstance(n, bool):
        raise HTTPError(400, f'"n": {n!r} is not supported: this server returns one choice; pass "n": 1', "n")
    model = optional_str(body, "model")
    video, question, system = read_messages(body.get("messages"), limits)
    return Chat(model, video, question, system, run_options(body, default), generation(body, limits),
                optional_bool(body, "keep_map", False))


def read_messages(messages, limits: Limits, *, video_required: bool = True) -> tuple[str | None, str, str | None]:
    """``(video url, question, system prompt)`` of a one-turn chat."""
    if not isinstance(messages, list) or not messages:
        raise HTTPError(400, '"messages" must be a non-empty list of {"role", "content"} objects', "messages")
    video, texts, system = None, [], []
    users = 0
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise HTTPError(400, f'"{where}" must be an object with "role" and "content"', where)
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant"):
            raise HTTPError(400, f'"{where}.role": {role!r} is not one of system, user, assistant', f"{where}.role")
        if role == "assistant":
            raise HTTPError(400, f'"{where}": this endpoint answers one question about one video; for follow-up '
                                 "questions create a session (POST /v1/sessions) and ask it", where)
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(parts, list):
            raise HTTPError(400, f'"{where}.content" must be a string or a list of content parts', f"{where}.content")
        for j, part in enumerate(parts):
            at = f"{where}.content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                if not isinstance(part.get("text"), str):
                    raise HTTPError(400, f'"{at}.text" must be a string', f"{at}.text")
                (system if role in ("system", "developer") else texts).append(part["text"])
            elif kind == "video_url" and role == "user":
                url = part.get("video_url")
                url = url.get("url") if isinstance(url, dict) else url
                if video is not None:
                    raise HTTPError(400, f'"{at}": one video per request; send the others in their own requests',
                                    at)
                video = url if isinstance(url, str) else ""
                if not video:
                    raise HTTPError(400, f'"{at}.video_url.url" must be a non-empty string', f"{at}.video_url")
            elif kind in ("image_url", "input_image", "input_audio", "file"):
                raise HTTPError(400, f'"{at}": {kind} parts are not supported; this server answers about videos '
                                     '(a "video_url" part)', at)
            else:
                raise HTTPError(400, f'"{at}.type": {kind!r} is not a supported content part; use "text" or '
                                     '"video_url"', f"{at}.type")
        users += role == "user"
    if users != 1:
        raise HTTPError(400, f'"messages" must hold exactly one user turn (got {users}); for follow-up questions '
                             "use a session", "messages")
    if video_required and video is None:
        raise HTTPError(400, '"messages": the user turn has no video; add a {"type": "video_url", "video_url": '
                             '{"url": ...}} part', "messages")
    if not video_required and video is not None:
        raise HTTPError(400, '"messages": a session already holds its video; send more frames with POST '
                             "/v1/sessions/{id}/frames", "messages")
    question = "\n".join(t for t in texts if t.strip()).strip()
    if not question:
        raise HTTPError(400, '"messages": the user turn has no question text; add a {"type": "text"} part',
                        "messages")
    system = "\n".join(system) if system else None
    if len(question) + len(system or "") > limits.max_question_chars:
        raise HTTPError(400, f'"messages": the question and system prompt have {len(question) + len(system or "")} '
                             f"characters, more than this server takes ({limits.max_question_chars}, "
                             "--max-question-chars); shorten them", "messages")
    return video, question, system


def run_options(body: dict, default: RunOptions | None = None) -> RunOptions:
    """The request's method and sampling; ``default`` (the server's method) fills in what the request leaves out
    when it names no method or the same one."""
    default = default or RunOptions()
    method = body.get("method", default.method)
    if not isinstance(method, str) or not method:
        raise HTTPError(400, f'"method": {method!r} must be a method name (GET /v1/methods lists them)', "method")
    settings = body.get("settings") or {}
    if not isinstance(settings, dict):
        raise HTTPError(400, f'"settings" must be an object of the method\'s settings, got {settings!r}', "settings")
    for key in ("keep", "budget", "name"):
        if key in settings:
            where = '"method"' if key == "name" else f'"{key}"'
            raise HTTPError(400, f'"settings.{key}" is not a method setting; pass it as {where} beside "settings"',
                            f"settings.{key}")
    keep, budget = number(body, "keep"), integer(body, "budget")
    if method == default.method:
        settings = default.settings | settings
        if keep is None and budget is None:
            keep, budget = default.keep, default.budget
    fps, frames, frames_field = number(body, "fps"), integer(body, "frames"), "frames"
    if fps is None and frames is None:
        fps, frames = vllm_video_kwargs(body)
        frames_field = "media_io_kwargs.video.num_frames"
    return RunOptions(method, keep, budget, dict(settings), fps, frames, integer(body, "max_frames"),
                      number(body, "start"), number(body, "end"), frames_field)


def vllm_video_kwargs(body: dict) -> tuple[float | None, int | None]:
    """``(fps, frames)`` from vLLM's ``media_io_kwargs: {"video": {"fps": F, "num_frames": N}}`` (``None`` if absent;
    vLLM's ``num_frames: -1``, every frame, falls back to the default sampling: 1 fps up to ``--max-frames``)."""
    media = body.get("media_io_kwargs")
    if media is None or (isinstance(media, dict) and media.get("video") is None):
        return None, None
    video = media.get("video") if isinstance(media, dict) else None
    if not isinstance(video, dict):
        raise HTTPError(400, '"media_io_kwargs" must be {"video": {"num_frames": N}} or {"video": {"fps": F}}',
                        "media_io_kwargs")
    fps = number({"media_io_kwargs.video.fps": video.get("fps")}, "media_io_kwargs.video.fps")
    frames = integer({"media_io_kwargs.video.num_frames": video.get("num_frames")}, "media_io_kwargs.video.num_frames")
    if frames is not None and frames < 0:
        frames = None
    for key, value in (("num_frames", frames), ("fps", fps)):
        if value is not None and value <= 0:
            raise HTTPError(400, f'"media_io_kwargs.video.{key}": {value} is invalid: it must be positive',
                            f"media_io_kwargs.video.{key}")
    if fps is not None and frames is not None:
        fps = None  # vLLM samples num_frames when both are given
    return fps, frames


def generation(body: dict, limits: Limits) -> Generation:
    max_tokens = integer(body, "max_completion_tokens")
    key = "max_completion_tokens"
    if max_tokens is None:
        max_tokens, key = integer(body, "max_tokens"), "max_tokens"
    if max_tokens is None:
        max_tokens = min(256, limits.max_tokens)
    elif not 1 <= max_tokens <= limits.max_tokens:
        raise HTTPError(400, f'"{key}": {max_tokens} is out of range: it must be 1 to {limits.max_tokens} '
                             "(--max-tokens)", key)
    temperature = number(body, "temperature")
    temperature = 0.0 if temperature is None else temperature
    if not 0 <= temperature <= 2:
        raise HTTPError(400, f'"temperature": {temperature} is out of range: it must be 0 (greedy) to 2',
                        "temperature")
    top_p = number(body, "top_p")
    top_p = 1.0 if top_p is None else top_p
    if not 0 < top_p <= 1:
        raise HTTPError(400, f'"top_p": {top_p} is out of range: it must be in (0, 1]', "top_p")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, Integral)):
        raise HTTPError(400, f'"seed": {seed!r} must be an integer', "seed")
    if seed is not None and not 0 <= seed < 2**63:
        raise HTTPError(400, f'"seed": {seed} is out of range: it must be 0 to 2**63 - 1', "seed")
    stop = body.get("stop")
    stop = () if stop is None else (stop,) if isinstance(stop, str) else stop
    if not isinstance(stop, (list, tuple)) or len(stop) > 4 or not all(isinstance(s, str) and 0 < len(s) <= 256
                                                                        for s in stop):
        raise HTTPError(400, f'"stop": {_short(body.get("stop"))} must be a string or up to 4 non-empty strings of '
                             "at most 256 characters", "stop")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise HTTPError(400, '"stream_options" must be an object', "stream_options")
    return Generation(max_tokens, float(temperature), float(top_p), seed, tuple(stop),
                      optional_bool(body, "stream", False), bool(options.get("include_usage", False)))


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# ----- typed fields ------------------------------------------------------------------------------------------------
def number(body: dict, key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise HTTPError(400, f'"{key}": {value!r} must be a number', key)
    return value


def integer(body: dict, key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise HTTPError(400, f'"{key}": {value!r} must be an integer', key)
    return int(value)


def optional_str(body: dict, key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise HTTPError(400, f'"{key}": {value!r} must be a string', key)
    return value


def optional_bool(body: dict, key: str, default: bool) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise HTTPError(400, f'"{key}": {value!r} must be true or false', key)
    return value


def video_field(body: dict) -> str:
    """The video of a session or frames request: ``"video_url": {"url": ...}`` or ``"video_url": "..."``."""
    url = body.get("video_url", body.get("video"))
    url = url.get("url") if isinstance(url, dict) else url
    if not isinstance(url, str) or not url.strip():
        raise HTTPError(400, '"video_url" must be {"url": ...} naming a file under the media directory, an uploaded '
                             "file id (file-...), or a data: URL", "video_url")
    return url

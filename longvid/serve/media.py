"""Where a request's video comes from: files under ``--media-dir``, uploads, ``data:`` URLs, and (only when enabled)
http(s) URLs. Every other source is refused with one line.

- ``file:///abs/path.mp4`` or ``clip.mp4`` / ``sub/clip.mp4``: a file under the media directory. The path is resolved
  with symlinks followed and must stay inside it (``..``, absolute paths elsewhere, and links pointing out are
  refused).
- ``file-<id>``: a file uploaded with ``POST /v1/files`` (size-limited, checked to be a video on arrival).
- ``data:video/mp4;base64,...``: decoded into an upload (size-limited).
- ``http://`` / ``https://``: downloaded into an upload only with ``--allow-remote-media``.

    media = Media(media_dir=Path("/srv/videos"), upload_dir=Path("/tmp/uploads"), max_upload_bytes=512 << 20)
"""

from __future__ import annotations

import base64
import json
import binascii
import os
import re
import secrets
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from longvid.serve.errors import HTTPError

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".ts", ".mpg", ".mpeg", ".flv")
_FILE_ID = re.compile(r"^file-[0-9a-f]{24}$")
_RECORD = "upload.json"  # an upload's record beside it, in a shared upload folder


@dataclass
class Upload:
    """A stored upload (the OpenAI file object's fields)."""

    id: str
    filename: str
    bytes: int
    created_at: int
    path: Path
    purpose: str = "vision"
    temporary: bool = False  # a data: URL or a download: removed when its request ends, never listed

    def describe(self) -> dict:
        return {"id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed"}


class Media:
    """Resolves video sources to local files and stores uploads."""

    def __init__(self, media_dir: Path | None, upload_dir: Path, max_upload_bytes: int,
                 allow_remote: bool = False, remove_at_close: bool = True, shared: bool = False):
        self.media_dir = Path(os.path.realpath(media_dir)) if media_dir is not None else None
        self.upload_dir, self.remove_at_close = Path(upload_dir), remove_at_close
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        self.max_upload_bytes, self.allow_remote = max_upload_bytes, allow_remote
        self.uploads: dict[str, Upload] = {}
        self.lock = threading.Lock()
        # shared: several server processes (Ray Serve replicas) use one upload folder; each upload's record is also
        # written beside it (upload.json) so an upload made through one replica is found by the others
        self.shared = shared

    # ----- resolving -----------------------------------------------------------------------------------------------
    def resolve(self, url, param: str) -> Path:
        """The local file a ``video_url`` names (``param`` names the field in errors)."""
        if not isinstance(url, str) or not url.strip():
            raise HTTPError(400, f'"{param}" must be a non-empty string: a file:// URL or a path under the server\'s '
                                 "media directory, an uploaded file id (file-...), or a data: URL", param)
        url = url.strip()
        if "\x00" in url:
            raise HTTPError(400, f'"{param}" contains a NUL byte', param)
        if _FILE_ID.match(url):
            return self.upload(url, param).path
        scheme = urllib.parse.urlsplit(url).scheme.lower() if "://" in url or url.startswith("data:") else ""
        if scheme == "data":
            return self.store_data_url(url, param).path
        if scheme in ("http", "https"):
            if not self.allow_remote:
                raise HTTPError(400, f'"{param}": {scheme}:// URLs are not fetched by this server (start it with '
                                     "--allow-remote-media to allow them); upload the file with POST /v1/files or "
                                     "place it under --media-dir", param)
            return self.download(url, param).path
        if scheme == "file":
            path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
        elif scheme:
            raise HTTPError(400, f'"{param}": the {scheme}:// scheme is not supported; pass a file:// URL or a path '
                                 "under --media-dir, an uploaded file id (file-...), or a data: URL", param)
        else:
            path = url
        return self.media_file(path, param)

    def media_file(self, path: str, param: str) -> Path:
        if self.media_dir is None:
            raise HTTPError(400, f'"{param}": this server has no media directory (start it with --media-dir DIR); '
                                 "upload the file with POST /v1/files instead", param)
        try:
            os.fsencode(path)
        except UnicodeEncodeError:
            raise HTTPError(400, f'"{param}": {path!r} is not a valid file name (an unpaired surrogate)', param) \
                from None
        candidate = Path(path) if os.path.isabs(path) else self.media_dir / path
        real = Path(os.path.realpath(candidate))
        if os.path.commonpath([real, self.media_dir]) != str(self.media_dir):
            raise HTTPError(400, f'"{param}": {path!r} is outside the server\'s media directory; pass a path under '
                                 "it (no '..', no links that leave it)", param)
        if not real.is_file():
            raise HTTPError(404, f'"{param}": no file {path!r} in the server\'s media directory', param,
                            code="media_not_found")
        return real

    def list_media(self, limit: int = 1000) -> list[dict]:
        """Video files under the media directory (relative paths), for the web page."""
        if self.media_dir is None:
            return []
        found = []
        for root, dirs, files in os.walk(self.media_dir, followlinks=False):
            dirs.sort()
            for name in sorted(files):
                if name.lower().endswith(VIDEO_SUFFIXES):
                    path = Path(root) / name
                    found.append({"path": str(path.relative_to(self.media_dir)), "bytes": path.stat().st_size})
                    if len(found) >= limit:
                        return found
        return found

    # ----- uploads -------------------------------------------------------------------------------------------------
    def upload(self, file_id: str, param: str = "file_id") -> Upload:
        with self.lock:
            upload = self.uploads.get(file_id)
        if self.shared and _FILE_ID.match(file_id) and (upload is None or not upload.temporary):
            upload = self._read_record(self.upload_dir / file_id / _RECORD)  # another replica may have deleted it
        if upload is None:
            raise HTTPError(404, f'"{param}": no uploaded file {file_id!r} (it was never uploaded or was deleted)',
                            param, code="file_not_found")
        return upload

    def public(self, text: str) -> str:
        """``text`` as a client may read it: the server's own folders are not shown (an upload's stored path becomes
        its file id, a media file's path becomes relative to the media directory) and errno numbers are dropped."""
        text = re.sub(re.escape(str(self.upload_dir)) + r"/(file-[0-9a-f]+)/[^\s':,)]*", r"\1", text)
        if self.media_dir is not None:
            text = text.replace(str(self.media_dir) + os.sep, "")
        text = re.sub(r" \(relative paths resolve against [^)]*\)", "", text)
        return re.sub(r"\[Errno -?\d+\] ", "", text)

    def new_upload_path(self, filename: str) -> tuple[str, Path]:
        file_id = "file-" + secrets.token_hex(12)
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", Path(filename or "video").name)[:100] or "video"
        folder = self.upload_dir / file_id
        folder.mkdir(parents=True)
        return file_id, folder / safe

    def add_upload(self, file_id: str, path: Path, filename: str, size: int, param: str,
                   temporary: bool = False) -> Upload:
        """Register a stored file once it is known to be a video; otherwise delete it and refuse."""
        from longvid.video import VideoError, probe

        try:
            probe(path)
        except VideoError as err:
            shutil.rmtree(path.parent, ignore_errors=True)
            why = self.public(_first_line(err)).replace(f"{file_id} is not a readable video: ", "")
            raise HTTPError(400, f'"{param}": {filename!r} is not a readable video: {why}', param,
                            code="invalid_video") from None
        upload = Upload(file_id, filename, size, int(time.time()), path, temporary=temporary)
        if self.shared and not temporary:
            record = dict(id=file_id, filename=filename, bytes=size, created_at=upload.created_at, path=path.name)
            (path.parent / _RECORD).write_text(json.dumps(record))
        with self.lock:
            self.uploads[file_id] = upload
        return upload

    def _read_record(self, record: Path) -> Upload | None:
        """An upload another process of a shared folder stored, or None."""
        try:
            r = json.loads(record.read_text())
            return Upload(r["id"], r["filename"], r["bytes"], r["created_at"], record.parent / r["path"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def too_big(self, param: str) -> HTTPError:
        return HTTPError(413, f'"{param}" is larger than this server accepts ({self.max_upload_bytes / 2**20:g} '
                              "MiB, --max-upload-mb); send a shorter or smaller video", param, code="file_too_large")

    def store_data_url(self, url: str, param: str) -> Upload:
        head, _, payload = url.partition(",")
        if ";base64" not in head:
            raise HTTPError(400, f'"{param}": a data: URL must be base64 (data:video/mp4;base64,...)', param)
        if len(payload) * 3 // 4 > self.max_upload_bytes:
            raise self.too_big(param)
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise HTTPError(400, f'"{param}": the data: URL is not valid base64', param) from None
        file_id, path = self.new_upload_path("data" + _suffix(head))
        path.write_bytes(data)
        return self.add_upload(file_id, path, path.name, len(data), param, temporary=True)

    def download(self, url: str, param: str) -> Upload:
        file_id, path = self.new_upload_path(Path(urllib.parse.urlsplit(url).path).name or "video")
        size = 0
        try:
            with _OPENER.open(url, timeout=30) as response, open(path, "wb") as out:
                while chunk := response.read(1 << 20):
                    size += len(chunk)
                    if size > self.max_upload_bytes:
                        raise self.too_big(param)
                    out.write(chunk)
        except HTTPError:
            shutil.rmtree(path.parent, ignore_errors=True)
            raise
        except (OSError, ValueError) as err:
            shutil.rmtree(path.parent, ignore_errors=True)
            raise HTTPError(400, f'"{param}": cannot fetch {url!r}: {_first_line(err)}', param) from None
        return self.add_upload(file_id, path, path.name, size, param, temporary=True)

    def release(self, path: Path | None) -> None:
        """Remove the temporary upload (a data: URL, a download) stored at ``path``, once its request has ended."""
        with self.lock:
            found = next((u for u in self.uploads.values() if u.temporary and u.path == path), None)
            if found is not None:
                self.uploads.pop(found.id)
        if found is not None:
            shutil.rmtree(found.path.parent, ignore_errors=True)

    def delete(self, file_id: str) -> Upload:
        upload = self.upload(file_id)
        with self.lock:
            self.uploads.pop(file_id, None)
        shutil.rmtree(upload.path.parent, ignore_errors=True)
        return upload

    def list_uploads(self) -> list[dict]:
        if self.shared:
            found = (self._read_record(r) for r in sorted(self.upload_dir.glob(f"file-*/{_RECORD}")))
            return sorted((u.describe() for u in found if u is not None), key=lambda u: u["created_at"])
        with self.lock:
            return [u.describe() for u in self.uploads.values() if not u.temporary]

    def close(self) -> None:
        if self.remove_at_close:
            shutil.rmtree(self.upload_dir, ignore_errors=True)
        else:
            for upload in list(self.uploads.values()):
                shutil.rmtree(upload.path.parent, ignore_errors=True)


class _HTTPOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) URLs only (urllib's default also follows them to ftp://)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise urllib.error.HTTPError(newurl, code, f"redirected to {newurl!r}, which is not http(s)", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HTTPOnlyRedirects)


def _suffix(head: str) -> str:
    kind = head[5:].split(";")[0].lower()  # data:video/webm;base64 -> video/webm
    return {"video/webm": ".webm", "video/x-matroska": ".mkv", "video/quicktime": ".mov"}.get(kind, ".mp4")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__

"""A table's files as bytes: what the log replay, the DV commit and the collector need.

A commit is a new `_delta_log/<version>.json` that must never overwrite one another writer
made first. On local disk: a temporary file beside it, then `os.link`, which fails when the
name exists. On S3 (and any object store): a conditional PUT (`If-None-Match: *`) through
`obstore`, the Python binding of the same `object_store` crate delta-rs uses.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import unquote

import obstore
from obstore.exceptions import AlreadyExistsError, NotFoundError

_ENDPOINT_KEYS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT", "ENDPOINT_URL")
_PASSED = {
    "AWS_ACCESS_KEY_ID": "aws_access_key_id",
    "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key",
    "AWS_SESSION_TOKEN": "aws_session_token",
    "AWS_REGION": "aws_region",
    "AWS_DEFAULT_REGION": "aws_region",
    "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "aws_virtual_hosted_style_request",
}
_TRUE = ("true", "1", "yes")


@dataclass(frozen=True)
class Entry:
    """One listed file: its path relative to the table, size and last change."""

    path: str
    size: int
    modified: datetime


class TableStore(Protocol):
    """The files of one table, by path relative to its root."""

    def get(self, path: str) -> bytes:
        """The whole file; raises FileNotFoundError when it is absent."""
        ...

    def put(self, path: str, data: bytes) -> None:
        """Write (or replace) a file whose name is unique to this writer."""
        ...

    def put_if_absent(self, path: str, data: bytes) -> bool:
        """Write a file only if no file has that name; False if one has."""
        ...

    def list_folder(self, prefix: str) -> list[Entry]:
        """Files under `prefix` (a folder such as `_delta_log/`, or `` for the root)."""
        ...

    def walk(self) -> list[Entry]:
        """Every file of the table, in every folder."""
        ...

    def delete(self, path: str) -> None: ...


class LocalStore:
    """A table on local disk."""

    def __init__(self, root: str) -> None:
        self.root = root

    def _abs(self, path: str) -> str:
        return os.path.join(self.root, path)

    def get(self, path: str) -> bytes:
        with open(self._abs(path), "rb") as file:
            return file.read()

    def put(self, path: str, data: bytes) -> None:
        target = self._abs(path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())

    def put_if_absent(self, path: str, data: bytes) -> bool:
        target = self._abs(path)
        folder = os.path.dirname(target)
        os.makedirs(folder, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=".tm-", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            try:
                os.link(temp, target)  # atomic, and refuses an existing name
            except FileExistsError:
                return False
            return True
        finally:
            os.unlink(temp)

    def list_folder(self, prefix: str) -> list[Entry]:
        folder = self._abs(prefix)
        if not os.path.isdir(folder):
            return []
        out: list[Entry] = []
        for entry in os.scandir(folder):
            if entry.is_file():
                info = entry.stat()
                modified = datetime.fromtimestamp(info.st_mtime, UTC)
                out.append(Entry(prefix + entry.name, info.st_size, modified))
        return out

    def walk(self) -> list[Entry]:
        out: list[Entry] = []
        for folder, _, names in os.walk(self.root):
            relative = os.path.relpath(folder, self.root)
            prefix = "" if relative == "." else relative.replace(os.sep, "/") + "/"
            out.extend(e for e in self.list_folder(prefix) if e.path[len(prefix) :] in set(names))
        return out

    def delete(self, path: str) -> None:
        try:
            os.unlink(self._abs(path))
        except FileNotFoundError:
            pass


class ObjectStore:
    """A table in an object store (s3://...), with delta-rs's storage options."""

    def __init__(self, uri: str, storage_options: Mapping[str, str]) -> None:
        config, client = object_store_options(storage_options)
        options: dict[str, Any] = {"config": config, "client_options": client}
        self.store = obstore.store.from_url(uri, **options)

    def get(self, path: str) -> bytes:
        try:
            return bytes(obstore.get(self.store, path).bytes())
        except NotFoundError as exc:
            raise FileNotFoundError(path) from exc

    def put(self, path: str, data: bytes) -> None:
        obstore.put(self.store, path, data)

    def put_if_absent(self, path: str, data: bytes) -> bool:
        try:
            obstore.put(self.store, path, data, mode="create")
        except AlreadyExistsError:
            return False
        return True

    def list_folder(self, prefix: str) -> list[Entry]:
        out = []
        for chunk in obstore.list(self.store, prefix or None):
            for meta in chunk:
                out.append(Entry(str(meta["path"]), int(meta["size"]), meta["last_modified"]))
        return out

    def walk(self) -> list[Entry]:
        return self.list_folder("")  # object store listings are recursive

    def delete(self, path: str) -> None:
        try:
            obstore.delete(self.store, path)
        except NotFoundError:
            pass


def object_store_options(
    storage_options: Mapping[str, str],
) -> tuple[dict[str, str], dict[str, object]]:
    """delta-rs storage options as obstore's (config, client options); delta-rs-only keys
    (locking, unsafe rename) are dropped: a conditional PUT needs neither."""
    upper = {key.upper(): value for key, value in storage_options.items()}
    config: dict[str, str] = {}
    for key in _ENDPOINT_KEYS:
        if key in upper:
            config["aws_endpoint"] = upper[key]
            break
    for key, name in _PASSED.items():
        if key in upper:
            config[name] = upper[key]
    client: dict[str, object] = {}
    if upper.get("AWS_ALLOW_HTTP", "").lower() in _TRUE:
        client["allow_http"] = True
    return config, client


def open_store(uri: str, storage_options: Mapping[str, str] | None = None) -> TableStore:
    """The store of the table at `uri` (a local path, `file://` or an object-store URL)."""
    if uri.startswith("file://"):
        return LocalStore(unquote(uri.removeprefix("file://")))
    if "://" not in uri:
        return LocalStore(os.path.abspath(uri))
    return ObjectStore(uri, storage_options or {})


def temporary_name() -> str:
    """A file name no other writer will pick."""
    return uuid.uuid4().hex

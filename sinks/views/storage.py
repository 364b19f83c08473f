"""The few file operations the consumer side needs on a lake root, local or object store.

Listing the lake's tables, and small text files beside them (the masking key, model status).
Local paths use the file system; `s3://` uses pyarrow's S3 file system configured from the
same storage options delta-rs receives.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pyarrow import fs


def join(root: str, *parts: str) -> str:
    """`root/part/...` for a local path or a URL."""
    return "/".join([root.rstrip("/"), *parts])


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> str:
    return os.path.abspath(uri.removeprefix("file://"))


def _filesystem(uri: str, storage_options: Mapping[str, str] | None) -> tuple[fs.FileSystem, str]:
    options = dict(storage_options or {})
    if uri.startswith(("s3://", "s3a://")) and options:
        # Built directly: `from_uri` would first ask AWS itself for the bucket's region.
        filesystem: fs.FileSystem = fs.S3FileSystem(
            endpoint_override=options.get("AWS_ENDPOINT_URL"),
            access_key=options.get("AWS_ACCESS_KEY_ID"),
            secret_key=options.get("AWS_SECRET_ACCESS_KEY"),
            region=options.get("AWS_REGION", "us-east-1"),
            scheme="http" if options.get("AWS_ALLOW_HTTP") in ("true", "1") else "https",
        )
        return filesystem, uri.split("://", 1)[1].rstrip("/")
    found, path = fs.FileSystem.from_uri(uri)
    return found, str(path)


def list_dirs(uri: str, storage_options: Mapping[str, str] | None = None) -> list[str]:
    """Names of the sub-directories of `uri`, sorted (none when it does not exist)."""
    if is_local(uri):
        path = local_path(uri)
        if not os.path.isdir(path):
            return []
        return sorted(e.name for e in os.scandir(path) if e.is_dir())
    filesystem, base = _filesystem(uri, storage_options)
    infos = filesystem.get_file_info(fs.FileSelector(base, allow_not_found=True))
    return sorted(i.base_name for i in infos if i.type == fs.FileType.Directory)


def list_files(uri: str, storage_options: Mapping[str, str] | None = None) -> list[str]:
    """Names of the files directly in `uri`, sorted (none when it does not exist)."""
    if is_local(uri):
        path = local_path(uri)
        if not os.path.isdir(path):
            return []
        return sorted(e.name for e in os.scandir(path) if e.is_file())
    filesystem, base = _filesystem(uri, storage_options)
    infos = filesystem.get_file_info(fs.FileSelector(base, allow_not_found=True))
    return sorted(i.base_name for i in infos if i.type == fs.FileType.File)


def read_text(uri: str, storage_options: Mapping[str, str] | None = None) -> str | None:
    """The file's text, None when it does not exist."""
    if is_local(uri):
        try:
            with open(local_path(uri), encoding="utf-8") as file:
                return file.read()
        except FileNotFoundError:
            return None
    filesystem, path = _filesystem(uri, storage_options)
    if filesystem.get_file_info(path).type == fs.FileType.NotFound:
        return None
    with filesystem.open_input_stream(path) as stream:
        return bytes(stream.read()).decode("utf-8")


def write_text(
    uri: str,
    text: str,
    storage_options: Mapping[str, str] | None = None,
    *,
    private: bool = False,
    exclusive: bool = False,
) -> bool:
    """Write a small file whole (a reader sees the old or the new text, never a part).

    Args:
        private: mode 600 on local disk.
        exclusive: only if the file does not exist yet; returns False when it did.
    """
    if is_local(uri):
        path = local_path(uri)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temporary = f"{path}.{os.getpid()}.tmp"
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(text)
        if not private:
            os.chmod(temporary, 0o644)
        try:
            if exclusive:
                try:
                    os.link(temporary, path)  # put-if-absent
                except FileExistsError:
                    return False
            else:
                os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
        return True
    filesystem, path = _filesystem(uri, storage_options)
    if exclusive and filesystem.get_file_info(path).type != fs.FileType.NotFound:
        return False
    with filesystem.open_output_stream(path) as stream:
        stream.write(text.encode("utf-8"))
    return True

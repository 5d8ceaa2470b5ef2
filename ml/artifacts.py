"""Where snapshots, adapters and merged exports live: a local folder or
S3-compatible object storage, with a bounded local cache.

Django-free (the worker, the inference server and the benchmarks build a
store from their own settings; ``core.artifacts`` does it for Django code)
and torch-free. Runners never see a store: their callers resolve every
input to a local folder before starting them and store their output after.

Both stores take an artifact in two steps, so that callers keep the order
"files first, row second" inside their transaction:

- ``key = store.stage(folder, name="adapters/campaign-3/job-7-dpo")`` gives
  the key to record (``storage_path``). ``LocalStore`` returns ``name``
  unchanged and writes nothing, exactly as a single-machine install always
  did. ``S3Store`` packs the folder into a deterministic tar, names it by its
  SHA-256 (``adapters/sha256-<hex>``) and uploads it unless an object of that
  name exists: objects are written once and never overwritten, and equal
  content is stored once.
- ``store.commit(folder, key)`` moves the folder into place: under the
  storage root (local), or into the cache (S3), so the machine that wrote an
  artifact never downloads it again.

``store.path(key)`` is the local folder of an artifact. ``S3Store``
downloads a missing one into its cache, checks the SHA-256 named by the key
before unpacking (a mismatch raises ``ArtifactCorrupt``, and neither the
download nor any cached copy of that key survives), and evicts the least
recently used entries past the cache's byte limit. Keys that are not content
hashes (artifacts written before the store was switched to S3) still
resolve under the local root.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

logger = logging.getLogger(__name__)

KINDS = ("snapshots", "adapters", "exports")
#: A content-addressed key: ``<kind>/sha256-<64 hex digits>``.
HASHED_KEY = re.compile(r"^(snapshots|adapters|exports)/sha256-([0-9a-f]{64})$")
_CHUNK = 1024 * 1024


class ArtifactError(RuntimeError):
    """An artifact could not be stored or fetched."""


class ArtifactMissing(ArtifactError):
    """No object (or folder) holds this key."""


class ArtifactCorrupt(ArtifactError):
    """A downloaded object's SHA-256 is not the one its key names."""


class ArtifactStore(Protocol):
    content_addressed: bool

    def stage(self, folder: Path, *, name: str) -> str: ...

    def commit(self, folder: Path, key: str, *, replace: bool = False) -> Path: ...

    def path(self, key: str) -> Path: ...

    def has(self, key: str, marker: str | None = None) -> bool: ...


def _local(root: Path, key: str) -> Path:
    path = (root / key).resolve()
    if not key or not path.is_relative_to(root.resolve()):
        raise ArtifactError(f"artifact key {key!r} points outside the storage root")
    return path


# ---------------------------------------------------------------- local folder


@dataclass(frozen=True)
class LocalStore:
    """Artifacts as folders under ``root`` (a local disk or a shared mount)."""

    root: Path
    content_addressed = False

    def stage(self, folder: Path, *, name: str) -> str:
        return name

    def commit(self, folder: Path, key: str, *, replace: bool = False) -> Path:
        final = self.root / key
        final.parent.mkdir(parents=True, exist_ok=True)
        if replace and final.exists():
            shutil.rmtree(final)
        folder.rename(final)
        return final

    def path(self, key: str) -> Path:
        return self.root / key

    def has(self, key: str, marker: str | None = None) -> bool:
        path = self.root / key
        return (path / marker).is_file() if marker else path.exists()


# ---------------------------------------------------------------- packing


class _HashingWriter:
    """A write-only stream that hashes what passes through it."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink = sink
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.sink.write(data)


def pack(folder: Path, into: Path) -> str:
    """Write ``folder`` as a tar to ``into`` and return its SHA-256.

    The tar is deterministic (sorted entries, no times, owners or modes from
    the disk), so equal folders get equal hashes wherever they were written.
    """
    with into.open("wb") as raw:
        writer = _HashingWriter(raw)
        with tarfile.open(
            fileobj=writer,  # type: ignore[arg-type]
            mode="w|",
            format=tarfile.GNU_FORMAT,
        ) as tar:
            for path in sorted(folder.rglob("*")):
                relative = path.relative_to(folder).as_posix()
                info = tarfile.TarInfo(relative)
                info.mtime = 0
                if path.is_dir():
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                elif path.is_file():
                    info.size, info.mode = path.stat().st_size, 0o644
                    with path.open("rb") as handle:
                        tar.addfile(info, handle)
    return writer.digest.hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# ---------------------------------------------------------------- the cache


class ArtifactCache:
    """Unpacked artifacts under ``root``, at most ``max_bytes`` in all.

    An entry is the folder ``<root>/<key>`` plus a sidecar
    ``<root>/<key>.entry`` holding its size; the sidecar's mtime is the
    entry's last use. Inserting evicts the least recently used entries until
    the total fits (never the entry just inserted, however large). Several
    processes on one machine may share a cache: inserts and evictions take a
    file lock, and entries appear and disappear by rename, so a reader sees
    a whole entry or none.
    """

    def __init__(self, root: Path, *, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def _entry(self, key: str) -> tuple[Path, Path]:
        folder = _local(self.root, key)
        return folder, folder.with_name(folder.name + ".entry")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def scratch(self) -> Path:
        """A new empty folder on the cache's filesystem (renames into place)."""
        path = self.root / ".tmp" / uuid.uuid4().hex
        path.mkdir(parents=True)
        return path

    def lookup(self, key: str) -> Path | None:
        folder, sidecar = self._entry(key)
        if not (folder.is_dir() and sidecar.is_file()):
            return None
        with contextlib.suppress(FileNotFoundError):  # evicted meanwhile
            os.utime(sidecar)
            return folder
        return None

    def insert(self, key: str, folder: Path) -> Path:
        """Make ``folder`` (consumed) the entry for ``key``; an entry that is
        already there wins (same key, same content)."""
        final, sidecar = self._entry(key)
        size = _folder_bytes(folder)
        with self._locked():
            if final.is_dir() and sidecar.is_file():
                shutil.rmtree(folder, ignore_errors=True)
            else:
                self._remove(final, sidecar)
                final.parent.mkdir(parents=True, exist_ok=True)
                # A move, not a rename: the folder may come from the storage
                # root's scratch space on another filesystem.
                shutil.move(str(folder), str(final))
                sidecar.write_text(json.dumps({"bytes": size}))
            os.utime(sidecar)
            self._evict(keep=sidecar)
        return final

    def discard(self, key: str) -> None:
        final, sidecar = self._entry(key)
        with self._locked():
            self._remove(final, sidecar)

    def _remove(self, folder: Path, sidecar: Path) -> None:
        sidecar.unlink(missing_ok=True)
        if folder.exists():
            doomed = self.root / ".tmp" / f"evict-{uuid.uuid4().hex}"
            doomed.parent.mkdir(parents=True, exist_ok=True)
            folder.rename(doomed)
            shutil.rmtree(doomed, ignore_errors=True)

    def entries(self) -> list[tuple[float, int, Path]]:
        """(last use, bytes, sidecar) of every entry, oldest first."""
        found = []
        for kind in KINDS:
            for sidecar in (self.root / kind).glob("*.entry"):
                try:
                    used = sidecar.stat().st_mtime
                    size = int(json.loads(sidecar.read_text())["bytes"])
                except (OSError, ValueError, KeyError):
                    continue
                found.append((used, size, sidecar))
        return sorted(found)

    def size(self) -> int:
        return sum(size for _, size, _ in self.entries())

    def _evict(self, *, keep: Path) -> None:
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        for _, size, sidecar in entries:
            if total <= self.max_bytes:
                break
            if sidecar == keep:
                continue
            self._remove(sidecar.with_name(sidecar.name[: -len(".entry")]), sidecar)
            total -= size
            logger.info("artifacts.cache.evicted entry=%s bytes=%s", sidecar, size)


# ---------------------------------------------------------------- S3


class S3Store:
    """Artifacts as content-addressed tar objects in an S3-compatible bucket.

    ``client`` is a boto3 S3 client (built from ``endpoint_url`` and the
    environment's credentials when omitted: ``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``, or any other source boto3 reads). ``root`` is
    the local storage root: scratch space, and the home of artifacts stored
    before the switch to S3.
    """

    content_addressed = True

    def __init__(
        self,
        *,
        bucket: str,
        cache: ArtifactCache,
        root: Path,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
    ) -> None:
        if client is None:
            import boto3
            from botocore.config import Config

            # A session of its own: boto3's default session keeps the first
            # credentials it resolved for the life of the process, so a store
            # built later (other keys in the environment) would sign with
            # stale ones.
            client = boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint_url or None,
                region_name=region or None,
                config=Config(
                    retries={"max_attempts": 5, "mode": "standard"},
                    # Path-style works with every S3 implementation, and so do
                    # checksums only where the API requires them (several
                    # S3-compatible servers reject boto3's default trailing
                    # CRC32); the store checks its own SHA-256 on download.
                    s3={"addressing_style": "path"},
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                ),
            )
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.cache = cache
        self.root = root
        self._known: set[str] = set()

    def object_name(self, key: str) -> str:
        name = f"{key}.tar"
        return f"{self.prefix}/{name}" if self.prefix else name

    # -- writing

    def stage(self, folder: Path, *, name: str) -> str:
        kind = name.split("/", 1)[0]
        if kind not in KINDS:
            raise ArtifactError(f"unknown artifact kind {kind!r} in {name!r}")
        tar = folder.with_name(folder.name + f".{uuid.uuid4().hex}.tar")
        try:
            key = f"{kind}/sha256-{pack(folder, tar)}"
            if not self._exists(key):
                self._upload(tar, key)
        finally:
            tar.unlink(missing_ok=True)
        self._known.add(key)
        logger.info("artifacts.stored key=%s name=%s", key, name)
        return key

    def _upload(self, tar: Path, key: str) -> None:
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        obj = self.object_name(key)
        try:
            if tar.stat().st_size <= 64 * _CHUNK:
                self._put_once(tar, obj)
            else:
                # Multipart: a racing writer can only write the same bytes.
                self.client.upload_file(str(tar), self.bucket, obj)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "412"):
                return  # someone stored the same content first
            raise ArtifactError(
                f"uploading {key} to {self.bucket} failed: {error}"
            ) from error
        except (BotoCoreError, S3UploadFailedError) as error:  # network, timeouts
            raise ArtifactError(
                f"uploading {key} to {self.bucket} failed: {error}"
            ) from error

    def _put_once(self, tar: Path, obj: str) -> None:
        """One PUT with If-None-Match, which makes the write-once rule the
        server's too; a server that does not implement the header gets a
        plain PUT (``stage`` checked that the name is free)."""
        from botocore.exceptions import ClientError

        with tar.open("rb") as body:
            try:
                self.client.put_object(
                    Bucket=self.bucket, Key=obj, Body=body, IfNoneMatch="*"
                )
                return
            except ClientError as error:
                code = error.response.get("Error", {}).get("Code", "")
                if code not in ("NotImplemented", "501"):
                    raise
            body.seek(0)
            self.client.put_object(Bucket=self.bucket, Key=obj, Body=body)

    def commit(self, folder: Path, key: str, *, replace: bool = False) -> Path:
        if not HASHED_KEY.match(key):
            raise ArtifactError(f"{key!r} is not a content-addressed key")
        return self.cache.insert(key, folder)

    # -- reading

    def _exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.object_name(key))
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchKey", "NotFound"):
                return False
            raise ArtifactError(
                f"checking {key} in {self.bucket} failed: {error}"
            ) from error
        except BotoCoreError as error:  # network, timeouts
            raise ArtifactError(
                f"checking {key} in {self.bucket} failed: {error}"
            ) from error
        return True

    def has(self, key: str, marker: str | None = None) -> bool:
        """Whether ``key`` is stored; an object is taken to hold ``marker``
        (it was written whole, from a folder that had it)."""
        if not HASHED_KEY.match(key):
            path = _local(self.root, key)
            return (path / marker).is_file() if marker else path.exists()
        if key in self._known or self.cache.lookup(key) is not None:
            return True
        if self._exists(key):
            self._known.add(key)  # objects are immutable: once there, there
            return True
        return False

    def path(self, key: str) -> Path:
        match = HASHED_KEY.match(key)
        if match is None:
            return _local(self.root, key)
        cached = self.cache.lookup(key)
        if cached is not None:
            return cached
        return self._fetch(key, match.group(2))

    def _fetch(self, key: str, expected: str) -> Path:
        from botocore.exceptions import BotoCoreError, ClientError

        scratch = self.cache.scratch()
        tar = scratch / "object.tar"
        started = time.monotonic()
        try:
            try:
                with tar.open("wb") as raw:
                    writer = _HashingWriter(raw)
                    self.client.download_fileobj(
                        self.bucket,
                        self.object_name(key),
                        writer,
                    )
            except ClientError as error:
                code = error.response.get("Error", {}).get("Code", "")
                if code in ("404", "NoSuchKey", "NotFound"):
                    raise ArtifactMissing(
                        f"{key} is not in the bucket {self.bucket}"
                    ) from error
                raise ArtifactError(
                    f"downloading {key} from {self.bucket} failed: {error}"
                ) from error
            except BotoCoreError as error:  # network, timeouts
                raise ArtifactError(
                    f"downloading {key} from {self.bucket} failed: {error}"
                ) from error
            actual = writer.digest.hexdigest()
            if actual != expected:
                self.cache.discard(key)
                self._known.discard(key)
                logger.error(
                    "artifacts.corrupt key=%s sha256=%s bucket=%s",
                    key,
                    actual,
                    self.bucket,
                )
                raise ArtifactCorrupt(
                    f"refused {key}: the object in the bucket {self.bucket} has "
                    f"SHA-256 {actual}, not the {expected} its name promises"
                )
            unpacked = scratch / "folder"
            with tarfile.open(tar, "r") as archive:
                archive.extractall(unpacked, filter="data")
            tar.unlink()
            final = self.cache.insert(key, unpacked)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        self._known.add(key)
        logger.info(
            "artifacts.fetched key=%s bytes=%s seconds=%.2f",
            key,
            writer.size,
            time.monotonic() - started,
        )
        return final

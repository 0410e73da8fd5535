"""The framework's floor of the HTTP scenario: a bare FastAPI ``POST /transfers`` and
``POST /transfers/batch``.

Each takes the same JSON body as eventbank's (the same pydantic models, ``TransferRequest``, and
for a batch ``TransferBatchRequest`` with each item read as a ``BatchTransferItem``, so the same
validation), in a plain `def` endpoint (run on Starlette's thread pool), and answers with a
small JSON body (a batch: how many items it read): no authentication, no middleware, no store,
no logging. It is served as ``eventbank serve`` serves (``cli/serve.py``): one process,
``uvicorn.run`` with the same options, its threads kept on one CPU and its garbage collector
tuned as ``serve`` tunes its own, so what it does per request is what the server stack costs at
least.

    python -m bench.http_floor --port 8001
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI

from eventbank.gc_tuning import tune_gc_for_serving
from eventbank.http.one_cpu import stay_on_one_cpu
from eventbank.http.schemas import BatchTransferItem, TransferBatchRequest, TransferRequest

app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@app.post("/transfers", status_code=201)
def transfer(body: TransferRequest) -> dict[str, str]:
    return {"kind": "transfer", "from": body.from_account_id, "to": body.to_account_id,
            "amount": body.amount}  # fmt: skip


@app.post("/transfers/batch")
def transfer_batch(body: TransferBatchRequest) -> dict[str, int]:
    items = [BatchTransferItem.model_validate(raw) for raw in body.items]
    return {"succeeded": len(items), "refused": 0, "replayed": 0}


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.http_floor", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)
    # The options of `eventbank serve` (src/eventbank/cli/serve.py), and nothing else; on one
    # CPU, as a single `eventbank serve` process runs (http/one_cpu.py), with its garbage
    # collector's settings (gc_tuning.py).
    stay_on_one_cpu()
    tune_gc_for_serving()
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False,
                timeout_graceful_shutdown=10)  # fmt: skip


if __name__ == "__main__":
    main()

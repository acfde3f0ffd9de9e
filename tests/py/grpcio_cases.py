#!/usr/bin/env python3
"""grpcio clients for the end-to-end tests (tests/it/uploads.rs,
tests/it/replies.rs), built on the example client's helpers, with grpcio's
default limits (4 MiB receive).

    grpcio_cases.py SOCKET MODULE cancel TXN_ID CTX_DIR N
        N uploads, each cancelled mid-stream once the daemon holds its partial
        file in CTX_DIR; prints "cancelled I" for each.
    grpcio_cases.py SOCKET MODULE half-close TXN_ID
        an upload that ends without AddContextEnd; prints "CODE details".
    grpcio_cases.py SOCKET MODULE list
        every transaction, full rows then brief, following pages; prints
        "full N", "brief N", then the ids, one a line.
    grpcio_cases.py SOCKET MODULE list-context TXN_ID
        every ctx file, following pages; prints "files N".
"""

import os
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "examples" / "python"))

import grpc  # noqa: E402
import ttm_lifecycle as ex  # noqa: E402

CHUNK = b"x" * (64 * 1024)
WAIT = 60


def header(pb, txn):
    return pb.AddContextRequest(header=pb.AddContextHeader(
        txn=txn, file_name="partial.bin", description="partial"))


def partial_files(ctx_dir):
    return [n for n in os.listdir(ctx_dir) if n.startswith(".ttmd-")]


def cancel(stub, pb, meta, txn, ctx_dir, n):
    for i in range(n):
        stop = threading.Event()

        def requests():
            yield header(pb, txn)
            for _ in range(4):
                yield pb.AddContextRequest(chunk=CHUNK)
            # Hold the stream open, mid-upload, until cancelled.
            stop.wait(WAIT)

        call = stub.AddContext.future(requests(), metadata=meta)
        deadline = time.monotonic() + WAIT
        while not partial_files(ctx_dir):
            if time.monotonic() > deadline or call.done():
                sys.exit(f"upload {i}: the daemon never held a partial file")
            time.sleep(0.01)
        call.cancel()
        stop.set()
        try:
            call.result()
            sys.exit(f"upload {i}: a cancelled upload was answered as stored")
        except grpc.FutureCancelledError:
            pass
        print(f"cancelled {i}", flush=True)


def half_close(stub, pb, meta, txn):
    def requests():
        yield header(pb, txn)
        yield pb.AddContextRequest(chunk=CHUNK)

    try:
        reply = stub.AddContext(requests(), metadata=meta, timeout=WAIT)
        print(f"OK stored {reply.file}")
    except grpc.RpcError as err:
        print(f"{err.code().name} {err.details()}")


def list_all(stub, pb, meta, module):
    full = ex.list_all(stub, pb, module, meta, brief=False)
    brief = ex.list_all(stub, pb, module, meta, brief=True)
    # Asking for everything at once still gets a reply grpcio accepts.
    stub.List(pb.ListRequest(module=module, page_size=1 << 31), metadata=meta, timeout=WAIT)
    print(f"full {len(full)}")
    print(f"brief {len(brief)}")
    for row in full:
        print(row.txn_id)


def list_context(stub, pb, meta, txn):
    files, token = [], ""
    while True:
        page = stub.ListContext(pb.ListContextRequest(txn=txn, page_token=token),
                                metadata=meta, timeout=WAIT)
        files.extend(page.files)
        token = page.next_page_token
        if not token:
            break
    print(f"files {len(files)}")


def main():
    socket, module, case, *rest = sys.argv[1:]
    with tempfile.TemporaryDirectory(prefix="ttm-py-") as scratch:
        pb, pb_grpc = ex.load_api(ex.DEFAULT_PROTO_DIR, None, scratch)
        stub = pb_grpc.TtmStub(ex.connect(socket, "localhost"))
        meta = ex.metadata()
        if case == "cancel":
            txn = pb.TxnRef(module=module, txn_id=rest[0])
            cancel(stub, pb, meta, txn, rest[1], int(rest[2]))
        elif case == "half-close":
            half_close(stub, pb, meta, pb.TxnRef(module=module, txn_id=rest[0]))
        elif case == "list-context":
            list_context(stub, pb, meta, pb.TxnRef(module=module, txn_id=rest[0]))
        elif case == "list":
            list_all(stub, pb, meta, module)
        else:
            sys.exit(f"unknown case {case}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Drive ttmd from Python with plain grpcio: one transaction's whole life.

Creates a transaction, follows its events in a second thread, appends a user
event, moves it SELECT -> EXECUTE (compare-and-set), streams a file into its
ctx/, commits it, and waits until the follower has seen the commit.

    pip install -r examples/python/requirements.txt
    python3 examples/python/ttm_lifecycle.py            # the default socket
    python3 examples/python/ttm_lifecycle.py --socket /run/ttm/ttmd.sock

The Python code for ttm.v1 is generated from proto/ at start-up with
grpc_tools.protoc into a temporary directory (see README.md beside this file
for generating it once instead).

The one thing every client of ttmd on a Unix socket must do: set the HTTP/2
authority to "localhost" (channel option grpc.default_authority). grpcio's
default for unix: targets is the socket path, which ttmd's HTTP/2 layer
rejects with RST_STREAM(PROTOCOL_ERROR). See docs/api.md.

Exit status: 0 on success, 1 when ttmd refused or failed a call, 2 on a
usage error or a missing dependency.
"""

import argparse
import hashlib
import os
import sys
import tempfile
import threading
from pathlib import Path

try:
    import grpc
except ImportError:
    print("error: grpcio is not installed: pip install -r examples/python/requirements.txt",
          file=sys.stderr)
    sys.exit(2)

HERE = Path(__file__).resolve().parent
DEFAULT_PROTO_DIR = HERE.parent.parent / "proto"

# The API generation this client speaks (ttm.v1), sent on every call so a
# daemon of another generation refuses with a clear message.
API_VERSION = "1"
CLIENT_VERSION = "python-example/0.1"

# How long one unary call may take, and how long to wait for the follower.
CALL_TIMEOUT = 30
FOLLOW_TIMEOUT = 60


def default_socket():
    """The socket ttmd listens on by default (same rules as ttmctl)."""
    if os.environ.get("TTM_SOCKET"):
        return os.environ["TTM_SOCKET"]
    if os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "ttm", "ttmd.sock")
    root = os.environ.get("TETRA_DIR") or os.path.join(os.path.expanduser("~"), ".tetra")
    return os.path.join(root, "run", "ttmd.sock")


def usage(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def load_api(proto_dir, generated_dir, scratch):
    """Imports ttm_pb2 / ttm_pb2_grpc: from `generated_dir` if given (made by
    the documented protoc command), else generated now into `scratch`."""
    if generated_dir is None:
        try:
            from grpc_tools import protoc
        except ImportError:
            usage("grpcio-tools is not installed (needed to generate the ttm.v1 code): "
                  "pip install -r examples/python/requirements.txt")
        generated_dir = scratch
        proto_dir = Path(proto_dir)
        source = proto_dir / "ttm" / "v1" / "ttm.proto"
        if not source.is_file():
            usage(f"{source} not found; pass --proto-dir DIR (the repository's proto/)")
        # protoc's own include dir, for the well-known types.
        import grpc_tools
        well_known = Path(grpc_tools.__file__).parent / "_proto"
        code = protoc.main([
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"-I{well_known}",
            f"--python_out={generated_dir}",
            f"--grpc_python_out={generated_dir}",
            str(source),
        ])
        if code != 0:
            usage(f"grpc_tools.protoc failed on {source} (exit {code})")
    sys.path.insert(0, str(generated_dir))
    from ttm.v1 import ttm_pb2, ttm_pb2_grpc  # noqa: E402 (generated just now)
    return ttm_pb2, ttm_pb2_grpc


def connect(socket, authority):
    """A channel to ttmd's Unix socket. `authority` "localhost" is what ttmd
    needs; None leaves grpcio's default (the socket path), which fails."""
    options = []
    if authority:
        options.append(("grpc.default_authority", authority))
    return grpc.insecure_channel(f"unix:{os.path.abspath(socket)}", options=options)


def metadata():
    """Metadata sent with every call (docs/api.md, "Metadata")."""
    meta = [("ttm-api-version", API_VERSION), ("ttm-client-version", CLIENT_VERSION)]
    # Naming the tree makes a daemon that serves another tree refuse instead
    # of writing there. Binary metadata keys end in -bin; values are bytes.
    if os.environ.get("TETRA_DIR"):
        meta.append(("ttm-root-bin", os.fsencode(os.path.abspath(os.environ["TETRA_DIR"]))))
    return meta


class Follower(threading.Thread):
    """Follows a transaction's events until its txn_commit (or txn_fail)."""

    def __init__(self, stub, pb, module, txn_id):
        super().__init__(daemon=True)
        request = pb.EventsRequest(
            txn=pb.TxnRef(module=module, txn_id=txn_id), from_seq=1, follow=True)
        self.call = stub.Events(request, metadata=metadata())
        self.caught_up = threading.Event()
        self.finished = threading.Event()
        self.events = []
        self.error = None

    def run(self):
        try:
            for message in self.call:
                kind = message.WhichOneof("kind")
                if kind == "event":
                    event = message.event
                    self.events.append(event)
                    print(f"  event {event.seq:>3} {event.event}", flush=True)
                    if event.event in ("txn_commit", "txn_fail"):
                        self.finished.set()
                        self.call.cancel()  # the stream itself never ends
                        return
                elif kind == "caught_up":
                    print(f"  caught up at seq {message.caught_up.seq}", flush=True)
                    self.caught_up.set()
                # heartbeats: nothing happened, the stream is alive
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.CANCELLED:
                self.error = err
        finally:
            self.caught_up.set()
            self.finished.set()


def file_chunks(pb, txn, path, description, chunk_size=64 * 1024):
    """AddContext's request stream: one header, the bytes in chunks, then
    AddContextEnd with the count and hash. ttmd stores the file only when the
    end arrives and matches, so a cancelled upload is never taken as whole."""
    yield pb.AddContextRequest(header=pb.AddContextHeader(
        txn=txn, file_name=os.path.basename(path), description=description))
    total, digest = 0, hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(chunk_size)
            if not chunk:
                break
            total += len(chunk)
            digest.update(chunk)
            yield pb.AddContextRequest(chunk=chunk)
    yield pb.AddContextRequest(end=pb.AddContextEnd(bytes=total, sha256=digest.hexdigest()))


def list_all(stub, pb, module, meta, brief=True):
    """Every transaction of a module: List answers a page at a time (each
    reply well under gRPC's default 4 MiB), so follow next_page_token."""
    txns, token = [], ""
    while True:
        page = stub.List(pb.ListRequest(module=module, brief=brief, page_token=token),
                         metadata=meta, timeout=CALL_TIMEOUT)
        txns.extend(page.txns)
        token = page.next_page_token
        if not token:
            return txns


def lifecycle(stub, pb, module, description, evidence):
    meta = metadata()
    hello = stub.Hello(pb.HelloRequest(client_version=CLIENT_VERSION, api_version=1),
                       metadata=meta, timeout=CALL_TIMEOUT)
    print(f"ttmd {hello.daemon_version} (ttm.v{hello.api_version}), pid {hello.pid}, "
          f"tree {hello.root}")

    state = stub.Create(pb.CreateRequest(module=module, description=description,
                                         target="@local", agent="python-example"),
                        metadata=meta, timeout=CALL_TIMEOUT).state
    print(f"created {state.txn_id} in {state.dir}")
    txn = pb.TxnRef(module=module, txn_id=state.txn_id)

    follower = Follower(stub, pb, module, state.txn_id)
    follower.start()
    if not follower.caught_up.wait(FOLLOW_TIMEOUT):
        raise SystemExit("error: the events stream did not catch up")

    seq = stub.AppendEvent(pb.AppendEventRequest(txn=txn, event="progress",
                                                 data_json='{"pct": 50}'),
                           metadata=meta, timeout=CALL_TIMEOUT).seq
    print(f"appended progress as seq {seq}")
    stub.Transition(pb.TransitionRequest(txn=txn, stage="SELECT"),
                    metadata=meta, timeout=CALL_TIMEOUT)
    # Compare-and-set: only if nobody moved it meanwhile (else ABORTED).
    stub.Transition(pb.TransitionRequest(txn=txn, stage="EXECUTE",
                                         pre=pb.Preconditions(expect_stage="SELECT")),
                    metadata=meta, timeout=CALL_TIMEOUT)
    added = stub.AddContext(file_chunks(pb, txn, evidence, "evidence"),
                            metadata=meta, timeout=CALL_TIMEOUT)
    print(f"stored ctx/{added.file} ({added.bytes} bytes, sha256 {added.sha256[:12]}...)")
    done = stub.Commit(pb.CommitRequest(txn=txn), metadata=meta, timeout=CALL_TIMEOUT)
    print(f"committed: {done.state.stage} after {done.duration_ms} ms")

    if not follower.finished.wait(FOLLOW_TIMEOUT):
        raise SystemExit("error: the follower did not see the commit")
    follower.join(FOLLOW_TIMEOUT)
    if follower.error is not None:
        raise follower.error
    print(f"followed {len(follower.events)} events until txn_commit")
    listed = list_all(stub, pb, module, meta)
    print(f"listed {len(listed)} transactions of module {module}")
    return state.txn_id


def explain(err):
    """One line for a failed call, with the fix for the authority problem."""
    code, details = err.code(), err.details() or ""
    line = f"error: ttmd answered {code.name}: {details}"
    if code == grpc.StatusCode.INTERNAL and "RST_STREAM" in details:
        line += ("\nhint: the HTTP/2 stream was reset with PROTOCOL_ERROR: the :authority was not "
                 "accepted. On a Unix socket set the channel option "
                 "('grpc.default_authority', 'localhost') (docs/api.md, \"Authority\").")
    elif code == grpc.StatusCode.UNAVAILABLE:
        line += "\nhint: is ttmd running on that socket? (`ttmctl daemon status`)"
    return line


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", default=default_socket(),
                        help="ttmd's socket (default: $TTM_SOCKET, else the daemon's default)")
    parser.add_argument("--module", default=os.environ.get("TTM_MODULE", "ttm"))
    parser.add_argument("--description", default="python example")
    parser.add_argument("--file", help="the file to add as evidence (default: a small temp file)")
    parser.add_argument("--proto-dir", default=str(DEFAULT_PROTO_DIR),
                        help="the repository's proto/ directory (default: %(default)s)")
    parser.add_argument("--generated", help="use code generated beforehand in this directory")
    parser.add_argument("--authority", default="localhost",
                        help="HTTP/2 authority; '' keeps grpcio's default, which ttmd rejects "
                             "(to see the failure)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ttm-py-") as scratch:
        pb, pb_grpc = load_api(args.proto_dir, args.generated, scratch)
        evidence = args.file
        if evidence is None:
            evidence = os.path.join(scratch, "evidence.txt")
            with open(evidence, "w") as f:
                f.write("evidence from the python example\n" * 1000)
        with connect(args.socket, args.authority or None) as channel:
            stub = pb_grpc.TtmStub(channel)
            try:
                lifecycle(stub, pb, args.module, args.description, evidence)
            except grpc.RpcError as err:
                print(explain(err), file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

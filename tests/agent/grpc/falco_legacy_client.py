"""A Falco-protocol client, as an existing user of Falco's gRPC API would write it.

Run as a separate process with the modules generated from the legacy reference protos on
sys.path (they define the same message names as the agent's copies, so they cannot share one
process with the server). Prints one JSON object per response on stdout, flushed.

usage: falco_legacy_client.py STUBS_DIR TARGET (sub COUNT | get | version)
"""

from __future__ import annotations

import json
import sys

import grpc
from google.protobuf.json_format import MessageToDict


def main() -> int:
    stubs, target, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    sys.path.insert(0, stubs)
    # Generated at test time into STUBS_DIR, so there is nothing for mypy to find.
    import outputs_pb2  # type: ignore[import-not-found]
    import outputs_pb2_grpc  # type: ignore[import-not-found]
    import version_pb2  # type: ignore[import-not-found]
    import version_pb2_grpc  # type: ignore[import-not-found]

    with grpc.insecure_channel(target) as channel:
        if mode == "version":
            reply = version_pb2_grpc.serviceStub(channel).version(version_pb2.request(), timeout=20)
            print(json.dumps(MessageToDict(reply)), flush=True)
            return 0
        outputs = outputs_pb2_grpc.serviceStub(channel)
        if mode == "get":
            for response in outputs.get(outputs_pb2.request(), timeout=20):
                print(json.dumps(MessageToDict(response)), flush=True)
            return 0
        count = int(sys.argv[4])
        print(json.dumps({"ready": True}), flush=True)
        for seen, response in enumerate(outputs.sub(iter([outputs_pb2.request()]), timeout=60), start=1):
            print(json.dumps(MessageToDict(response)), flush=True)
            if seen == count:
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())

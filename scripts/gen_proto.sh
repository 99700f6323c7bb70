#!/usr/bin/env bash
# gen_proto.sh -- regenerate profiler/proto/*_pb2.py(i) from proto/*.proto.
#
# protoc comes from PyPI's grpcio-tools, installed into a scratch venv (never into the
# project's .venv).  The version is pinned: grpcio-tools 1.73.1 bundles protoc 31.0,
# whose Python code needs a protobuf runtime >= 6.31.0 (runtimes accept code from an
# older protoc, never from a newer one).  Change the pin only together with the
# protobuf floor in pyproject.toml.
#
#     scripts/gen_proto.sh            # venv in /tmp/protoc-venv
#     PROTOC_VENV=/some/dir scripts/gen_proto.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${PROTOC_VENV:-/tmp/protoc-venv}
PIN="grpcio-tools==1.73.1"

if [[ ! -x $VENV/bin/python ]]; then
    /usr/bin/python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -m pip show grpcio-tools 2>/dev/null | grep -qx 'Version: 1.73.1'; then
    "$VENV/bin/python" -m pip install -q "$PIN"
fi

cd "$ROOT"
"$VENV/bin/python" -m grpc_tools.protoc \
    --proto_path=proto \
    --python_out=profiler/proto \
    --pyi_out=profiler/proto \
    proto/profile.proto proto/capture.proto
echo "gen_proto.sh: wrote profiler/proto/{profile,capture}_pb2.py and .pyi" >&2

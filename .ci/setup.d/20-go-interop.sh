#!/usr/bin/env bash
# Build the Go ttrpc interop peer (tests/interop/go/bin/ttrpc-peer) against containerd's ttrpc
# from Debian (golang-github-containerd-ttrpc-dev, GOPATH mode, no network).
# Stubs for hypervisor.proto and health.proto are generated with protoc-gen-gogottrpc from
# copies of protocols/kata/protos/*.proto whose go_package names a private GOPATH package
# (upstream's hypervisor.proto says go_package "./", which gogo cannot turn into a package).
# Idempotent: regenerates and rebuilds every time (Go's build cache keeps it fast).
set -euo pipefail
cd "$(dirname "$0")/../.."

peer=tests/interop/go
build=$peer/build
gopath=$build/gopath
mkdir -p "$build/protos" "$gopath/src/peerpods/interop" "$peer/bin"

for name in hypervisor health; do
    sed -e "s#^option go_package = .*#option go_package = \"peerpods/interop/$name;$name\";#" \
        "protocols/kata/protos/$name.proto" > "$build/protos/$name.proto"
    rm -rf "${gopath:?}/src/peerpods/interop/$name"
    protoc -I "$build/protos" --gogottrpc_out=plugins=ttrpc:"$gopath/src" "$build/protos/$name.proto"
done

# guest-components' protos carry no go_package: add one naming a private GOPATH package.
# gogo predates proto3 `optional` (ExtendRuntimeMeasurementRequest.RegisterIndex): the Go copy
# drops the keyword, which changes no field number or wire type.
for pair in aa:attestation-agent/attestation-agent cdh:confidential-data-hub/api; do
    name=${pair%%:*} source=${pair#*:}
    sed -e "s#^package \(.*\);#package \1;\noption go_package = \"peerpods/interop/$name;$name\";#" \
        -e "s#^\( *\)optional #\1#" \
        "protocols/kata/protos/$source.proto" > "$build/protos/$name.proto"
    rm -rf "${gopath:?}/src/peerpods/interop/$name"
    protoc -I "$build/protos" --gogottrpc_out=plugins=ttrpc:"$gopath/src" "$build/protos/$name.proto"
done

export GO111MODULE=off
export GOPATH="$PWD/$gopath:/usr/share/gocode"
export GOCACHE="${GOCACHE:-$PWD/$build/cache}"
go build -o "$peer/bin/ttrpc-peer" "./$peer/peer"
echo "built $peer/bin/ttrpc-peer"

#!/bin/bash
# /usr/local/bin/entrypoint.sh of the cloud-api-adaptor image: the command upstream's Helm
# DaemonSet runs, with the env of peer-pods-cm and peer-pods-secret.
#
# It does what upstream's src/cloud-api-adaptor/entrypoint.sh (v0.22) does: the provider is
# $1 or CLOUD_PROVIDER; the env vars upstream requires for that provider are checked (same
# messages); GCP_CREDENTIALS goes to a file named by GOOGLE_APPLICATION_CREDENTIALS; then
#   exec cloud-api-adaptor <provider> [upstream's flags] [$2...]
# and the adaptor reads every other setting from the env itself, as upstream's does.
# Differences, each deliberate:
# - alibabacloud, byom, ibmcloud and ibmcloud-powervs are upstream's but not this adaptor's:
#   they are refused with a message saying so, instead of failing later or silently.
# - `local` (this project's provider for machines without a cloud) is accepted.
# - arguments after the provider are passed on to cloud-api-adaptor (upstream drops them).
# - no or an unknown provider prints the usage and exits 1 (upstream exits 0); `help` exits 0.
# - the credentials file is written mode 0600, under $TMPDIR when set (/tmp in the image).
# - upstream's defaults for CRI_RUNTIME_ENDPOINT and ENABLE_CLOUD_PROVIDER_EXTERNAL_PLUGIN are
#   shell variables it never exports or uses; cloud-api-adaptor itself refuses to start when
#   ENABLE_CLOUD_PROVIDER_EXTERNAL_PLUGIN is true (it cannot load Go plugins).

PROVIDERS="aws azure gcp libvirt local"

CLOUD_PROVIDER=${1:-$CLOUD_PROVIDER}
[ $# -gt 0 ] && shift

test_vars() {
    for i in "$@"; do
        [ -z "${!i}" ] && echo "\$$i is NOT set" >&2 && EXT=1
    done
    [[ -n $EXT ]] && exit 1
}

one_of() {
    for i in "$@"; do
        [ -n "${!i}" ] && echo "\$$i is SET" && EXIST=1
    done
    [[ -z $EXIST ]] && echo "At least one of these must be SET: $*" >&2 && exit 1
}

aws() {
    one_of AWS_SECRET_ACCESS_KEY AWS_ROLE_ARN
    # web identity (IRSA) needs the role and its token file; access keys need both halves
    if [ -n "${AWS_ROLE_ARN}" ]; then
        test_vars AWS_WEB_IDENTITY_TOKEN_FILE AWS_ROLE_ARN
    else
        test_vars AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
    fi
    set -x
    exec cloud-api-adaptor aws "$@"
}

azure() {
    test_vars AZURE_CLIENT_ID AZURE_TENANT_ID AZURE_SUBSCRIPTION_ID AZURE_RESOURCE_GROUP \
        AZURE_SUBNET_ID AZURE_IMAGE_ID
    set -x
    exec cloud-api-adaptor azure "$@"
}

gcp() {
    test_vars GCP_CREDENTIALS GCP_PROJECT_ID GCP_ZONE PODVM_IMAGE_NAME
    # the key from the secret, not the node's metadata-server identity (as upstream)
    local creds=${TMPDIR:-/tmp}/gcp-creds.json
    (umask 077 && rm -f "$creds" && printf '%s\n' "$GCP_CREDENTIALS" >"$creds") || exit 1
    export GOOGLE_APPLICATION_CREDENTIALS=$creds
    set -x
    exec cloud-api-adaptor gcp "$@"
}

libvirt() {
    test_vars LIBVIRT_URI
    set -x
    exec cloud-api-adaptor libvirt -data-dir /opt/data-dir "$@"
}

local_() {
    set -x
    exec cloud-api-adaptor local "$@"
}

not_here() {
    echo "cloud provider $CLOUD_PROVIDER is upstream's, but this cloud-api-adaptor does not" \
        "implement it (providers here: ${PROVIDERS// /, })" >&2
    exit 1
}

help_msg() {
    cat <<EOF
Usage:
	CLOUD_PROVIDER=${PROVIDERS// /|} $0 [cloud-api-adaptor flags]
or
	$0 ${PROVIDERS// /|} [cloud-api-adaptor flags]

in addition all cloud provider specific env variables must be set and valid
(CLOUD_PROVIDER is currently set to "$CLOUD_PROVIDER")
EOF
}

case "$CLOUD_PROVIDER" in
    aws) aws "$@" ;;
    azure) azure "$@" ;;
    gcp) gcp "$@" ;;
    libvirt) libvirt "$@" ;;
    local) local_ "$@" ;;
    alibabacloud|byom|ibmcloud|ibmcloud-powervs) not_here ;;
    help|-h|-help|--help) help_msg; exit 0 ;;
    *) help_msg >&2; exit 1 ;;
esac

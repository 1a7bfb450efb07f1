#!/usr/bin/env bash
# The webhook's serving certificate without cert-manager: makes a private CA and a server
# certificate for the webhook Service, stores them in the secret webhook-server-cert and puts
# the CA into the MutatingWebhookConfiguration's caBundle.
#
#   bash deploy/webhook-certs.sh                 # create/replace, with kubectl's current context
#   bash deploy/webhook-certs.sh --out DIR       # only write ca.crt, tls.crt, tls.key to DIR
#   bash deploy/webhook-certs.sh --days 825      # validity (default 365); rerun to renew
#
# Apply the overlay first (without the cert-manager component), then run this. The webhook
# picks a renewed certificate up from the mounted secret without a restart.
set -euo pipefail

namespace=peer-pods-webhook-system
service=peer-pods-webhook-webhook-service
secret=webhook-server-cert
config=peer-pods-webhook-mutating-webhook-configuration
days=365
out=""
kubectl=${KUBECTL:-kubectl}

while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --days) days=$2; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "webhook-certs.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 077

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 \
    -days "$days" -subj "/CN=peer-pods-webhook-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 \
    -subj "/CN=$service.$namespace.svc" -keyout "$work/tls.key" -out "$work/tls.csr" 2>/dev/null
cat > "$work/ext.cnf" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:$service.$namespace.svc,DNS:$service.$namespace.svc.cluster.local
EXT
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
    -CAcreateserial -days "$days" -sha256 -extfile "$work/ext.cnf" -out "$work/tls.crt" \
    2>/dev/null

if [ -n "$out" ]; then
    mkdir -p "$out"
    cp "$work/ca.crt" "$work/tls.crt" "$work/tls.key" "$out/"
    echo "wrote $out/ca.crt, $out/tls.crt and $out/tls.key"
    exit 0
fi

"$kubectl" -n "$namespace" create secret tls "$secret" --cert="$work/tls.crt" \
    --key="$work/tls.key" --dry-run=client -o yaml | "$kubectl" apply -f -
bundle=$(base64 < "$work/ca.crt" | tr -d '\n')
"$kubectl" patch mutatingwebhookconfiguration "$config" --type=json \
    -p "[{\"op\": \"add\", \"path\": \"/webhooks/0/clientConfig/caBundle\", \"value\": \"$bundle\"}]"
echo "secret $namespace/$secret and the caBundle of $config are set (valid $days days)"

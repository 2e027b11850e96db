#!/usr/bin/env bash
# Makes the certificates for a cluster's mutual TLS (config `tls:`, README "TLS") with the openssl
# command: a new CA and one certificate signed by it, for servers and clients alike (the router,
# every shard and moe-client read the same `tls:` section).
#
#   scripts/make-tls-certs.sh DIR [SAN ...]
#
#   DIR/ca.pem, DIR/ca.key            the CA (keep ca.key off the cluster's machines)
#   DIR/cluster.pem, DIR/cluster.key  the certificate and its key; subject alternative names
#                                     IP:127.0.0.1 and DNS:localhost, plus each SAN given
#                                     ("DNS:moe-router.moe.svc", "IP:10.0.0.5"): every host name
#                                     or address the cluster's listen addresses use
#
# For development and tests: EC P-256 keys, valid for MOE_TLS_DAYS days (default 365). Running it
# again into another directory makes an unrelated CA (a rotation, or a rogue one in the tests).
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 DIR [SAN ...]   (SAN: DNS:name or IP:address)" >&2
  exit 2
fi
dir=$1
shift
days=${MOE_TLS_DAYS:-365}
sans="IP:127.0.0.1,DNS:localhost"
for s in "$@"; do sans="$sans,$s"; done
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
  -subj "/CN=moe-cluster CA $(date -u +%Y%m%dT%H%M%S) $RANDOM" \
  -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>"$tmp/log" || { cat "$tmp/log" >&2; exit 1; }
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=moe-cluster" \
  -keyout "$dir/cluster.key" -out "$tmp/cluster.csr" 2>"$tmp/log" || { cat "$tmp/log" >&2; exit 1; }
# Both usages: a shard serves the router and the router is a client of every shard.
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n' \
  "$sans" >"$tmp/ext"
openssl x509 -req -in "$tmp/cluster.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
  -CAcreateserial -CAserial "$tmp/ca.srl" -days "$days" -extfile "$tmp/ext" \
  -out "$dir/cluster.pem" 2>"$tmp/log" || { cat "$tmp/log" >&2; exit 1; }
chmod 644 "$dir/ca.pem" "$dir/cluster.pem"
echo "$dir: ca.pem, cluster.pem (SAN $sans), cluster.key"

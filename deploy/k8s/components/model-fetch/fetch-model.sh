#!/bin/sh
# Init container of every moe-cluster pod (components/model-fetch): puts the checkpoint on the
# pod's weights volume before the service starts, from MODEL_URI (http, https or file URL of a
# .tar or .tar.gz whose top level holds config.json and the *.safetensors) checked against
# MODEL_SHA256. The service's model.path, /models/model, appears only by an atomic rename once
# the archive's checksum matched and it unpacked completely, so a pod never starts on a partial
# or corrupt model: any failure exits non-zero and the kubelet retries the init container.
# Usage: fetch-model.sh [WEIGHTS_DIR]   (default /models)
set -eu
dir="${1:-/models}"
: "${MODEL_URI:?MODEL_URI is not set (ConfigMap moe-model-source)}"
: "${MODEL_SHA256:?MODEL_SHA256 is not set (ConfigMap moe-model-source)}"
case "$MODEL_SHA256" in
  *[!0-9a-f]*) echo "MODEL_SHA256 '$MODEL_SHA256' is not a lowercase hex sha256" >&2; exit 2 ;;
esac
if [ "${#MODEL_SHA256}" -ne 64 ]; then
  echo "MODEL_SHA256 '$MODEL_SHA256' is not 64 hex digits" >&2; exit 2
fi
model="$dir/model"
marker="$dir/.model-sha256"
if [ -d "$model" ] && [ -f "$marker" ] && [ "$(cat "$marker")" = "$MODEL_SHA256" ]; then
  echo "fetch-model: $model already holds $MODEL_SHA256"
  exit 0
fi
rm -rf "$model" "$marker" "$dir/.partial"
mkdir -p "$dir/.partial/model"
echo "fetch-model: downloading $MODEL_URI"
curl -fsSL --retry 5 --retry-delay 2 --connect-timeout 20 -o "$dir/.partial/archive" "$MODEL_URI"
echo "$MODEL_SHA256  $dir/.partial/archive" | sha256sum -c -
case "$MODEL_URI" in
  *.tar.gz | *.tgz) tar -xzf "$dir/.partial/archive" -C "$dir/.partial/model" ;;
  *) tar -xf "$dir/.partial/archive" -C "$dir/.partial/model" ;;
esac
if [ ! -f "$dir/.partial/model/config.json" ]; then
  echo "fetch-model: the archive has no config.json at its top level" >&2
  exit 1
fi
mv "$dir/.partial/model" "$model"
echo "$MODEL_SHA256" > "$marker"
rm -rf "$dir/.partial"
echo "fetch-model: $model ready ($MODEL_SHA256)"

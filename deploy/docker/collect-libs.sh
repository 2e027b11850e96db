#!/bin/sh
# collect-libs.sh BINARY DESTDIR — copies the shared libraries BINARY loads (as `ldd` resolves
# them on the build machine) into DESTDIR, named by soname, except those the runtime base image
# provides itself: glibc, libstdc++/libgcc_s (newer and backward compatible there) and CUDA
# (cudart, cuBLAS: the nvidia/cuda runtime image; libcuda: the node's driver). Used by
# Dockerfile.expert, whose runtime base is not the builder's distribution.
set -eu
bin=$1
dest=$2
mkdir -p "$dest"
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' | while read -r soname path; do
  case "$soname" in
    libc.so.* | libm.so.* | libdl.so.* | libpthread.so.* | librt.so.* | ld-linux*.so.* | \
    libstdc++.so.* | libgcc_s.so.* | \
    libcuda.so.* | libcudart.so.* | libcublas.so.* | libcublasLt.so.* | libnvidia-*)
      continue ;;
  esac
  cp -L "$path" "$dest/$soname"
  echo "collect-libs: $soname <- $path"
done

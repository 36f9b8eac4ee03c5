#!/usr/bin/env bash
# Builds Serin's images from the project's own Dockerfiles, with no registry, for the local node:
#   registry.k8s.io/pause:3.10        the Pod sandbox, from hack/tools/pause (a static Go program)
#   docker.io/library/debian:bookworm-slim   the base, made by hack/images/base.sh (debootstrap)
#   ghcr.io/serin/{operator,converter,runtime}:dev-KEY   operator/, converters/, runtime/Dockerfile
# KEY is a digest of what the image is built from (its Dockerfile, pyproject.toml, README.md and the
# four source folders), so a changed source file gives a new tag and an unchanged tree builds
# nothing. Each image is exported as an OCI archive under $SERIN_CACHE/images/archives/, which the
# node imports into its containerd. Prints one line per image on stdout: NAME REF ARCHIVE.
# Needs root (buildah with the overlay driver) and buildah, debootstrap (hack/provision.sh).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
IMAGES_REV=r1   # bump when the way images are built changes
STORE="$SERIN_CACHE/images/store"
ARCHIVES="$SERIN_CACHE/images/archives"
mkdir -p "$STORE" "$ARCHIVES"
b() { buildah --root "$STORE/root" --runroot "$STORE/run" --storage-driver overlay "$@"; }
# buildah's overlay driver keeps a private bind mount on its own directory: drop it on the way out,
# so a build leaves no mount on the host. A build that is interrupted also leaves its working
# containers mounted: remove them first (this store is this script's alone).
cleanup() { b rm --all >/dev/null 2>&1 || true; umount "$STORE/root/overlay" 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM

bash "$SERIN_ROOT/hack/images/base.sh" "$STORE"

export_archive() {  # REF ARCHIVE
  [[ -s "$2" ]] && return
  b push -q "$1" "oci-archive:$2.tmp:$1" >/dev/null
  mv "$2.tmp" "$2"
}

# The pause image: one static binary, nothing else.
pause_ref=registry.k8s.io/pause:3.10
pause_key=$(sha256sum "$SERIN_BIN/pause" | cut -c1-12)
pause_archive="$ARCHIVES/pause-$pause_key.tar"
if [[ ! -s "$pause_archive" ]]; then
  ctr=$(b from --pull=false scratch)
  b copy "$ctr" "$SERIN_BIN/pause" /pause >/dev/null
  b config --entrypoint '["/pause"]' --user 65535:65535 --os linux --arch amd64 "$ctr"
  b commit -q --rm --format oci "$ctr" "$pause_ref" >/dev/null
  export_archive "$pause_ref" "$pause_archive"
fi
echo "pause $pause_ref $pause_archive"

source_key() {  # DOCKERFILE → a digest of everything the image is built from (a file deleted in
  # the work tree but still in the index is not part of it)
  (cd "$SERIN_ROOT" && {
     echo "$IMAGES_REV $1"; b inspect --type image --format '{{.FromImageID}}' debian:bookworm-slim
     git ls-files -co --exclude-standard -- "$1" pyproject.toml README.md operator converters runtime local \
       | grep -v -E '(^|/)(__pycache__|\.mypy_cache)/' | LC_ALL=C sort \
       | while IFS= read -r f; do [[ -f "$f" ]] && printf '%s\n' "$f"; done | xargs -d '\n' sha256sum
   } | sha256sum | cut -c1-12)
}

ca=/etc/ssl/certs/ca-certificates.crt
current=()
for spec in operator:operator/Dockerfile converter:converters/Dockerfile runtime:runtime/Dockerfile; do
  name=${spec%%:*} dockerfile=${spec#*:}
  key=$(source_key "$dockerfile")
  ref="ghcr.io/serin/$name:dev-$key" archive="$ARCHIVES/$name-$key.tar"
  if [[ ! -s "$archive" ]]; then
    if ! b inspect --type image "$ref" >/dev/null 2>&1; then
      log "building $ref from $dockerfile"
      t0=$SECONDS
      # --layers: reuse unchanged steps (the dependency layer is shared by all three images);
      # --force-rm: a failed step leaves no container mounted; --network host: netavark would
      # leave iptables chains behind; the host's CA bundle reaches pip read-only, never the image.
      cert_args=()
      [[ -s "$ca" ]] && cert_args=(-v "$ca:/etc/serin-build-ca.crt:ro" --build-arg PIP_CERT=/etc/serin-build-ca.crt)
      b bud -q --pull=never --layers --force-rm --network host --isolation oci "${cert_args[@]}" \
        -f "$SERIN_ROOT/$dockerfile" -t "$ref" "$SERIN_ROOT" > "$STORE/build-$name.log" 2>&1 \
        || { tail -30 "$STORE/build-$name.log" >&2; log "building $ref failed (log: $STORE/build-$name.log)"; exit 1; }
      log "built $ref in $((SECONDS - t0))s"
    fi
    export_archive "$ref" "$archive"
    # Archives of earlier keys of this image are dead weight.
    find "$ARCHIVES" -name "$name-*.tar" ! -name "$name-$key.tar" -delete
  fi
  echo "$name $ref $archive"
  current+=("$ref")
done

# Each source change adds ~1 GB to the store (the final stage copies the whole environment): keep
# only this tree's images. Not `rmi --prune`: the build stage's untagged steps count as dangling,
# and with them would go the dependency layer every next build reuses (2 min to rebuild).
stale=$(b images --format '{{.Name}}:{{.Tag}}' --filter reference='ghcr.io/serin/*' \
          | grep -v -x -F "$(printf '%s\n' "${current[@]}")" || true)
if [[ -n "$stale" ]]; then
  xargs -r -n 20 buildah --root "$STORE/root" --runroot "$STORE/run" --storage-driver overlay rmi -f \
    <<< "$stale" >/dev/null
fi

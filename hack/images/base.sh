#!/usr/bin/env bash
# The base image every Serin Dockerfile starts from, `docker.io/library/debian:bookworm-slim`, made
# here without a registry: debootstrap (minbase) from the Debian mirror apt already uses, trimmed
# the way the official slim image is, committed as one layer into buildah's storage.
# Usage: base.sh STORE  (STORE: buildah's --root/--runroot parent). Idempotent: a tagged base is kept.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
STORE="$1"
TAG=docker.io/library/debian:bookworm-slim
b() { buildah --root "$STORE/root" --runroot "$STORE/run" --storage-driver overlay "$@"; }
if b inspect --type image "$TAG" >/dev/null 2>&1; then exit 0; fi

mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
[[ -n "$mirror" ]] || mirror="$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)"
[[ -n "$mirror" ]] || mirror=http://deb.debian.org/debian
rootfs="$STORE/base-rootfs"
rm -rf "$rootfs"
log "debootstrap bookworm (minbase) from $mirror"
debootstrap --variant=minbase bookworm "$rootfs" "$mirror" > "$STORE/debootstrap.log" 2>&1 \
  || { tail -20 "$STORE/debootstrap.log" >&2; exit 1; }

# Trimmed like debuerreotype's slim variant (the official debian:*-slim images).
cat > "$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'X'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
X
cat > "$rootfs/etc/apt/apt.conf.d/docker-clean" <<'X'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
X
echo 'Acquire::Languages "none";' > "$rootfs/etc/apt/apt.conf.d/docker-no-languages"
echo 'APT::AutoRemove::SuggestsImportant "false";' > "$rootfs/etc/apt/apt.conf.d/docker-autoremove-suggests"
cat > "$rootfs/etc/apt/sources.list" <<X
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${mirror%/debian}/debian-security bookworm-security main
X
find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$rootfs/usr/share/man/"* "$rootfs/usr/share/info/"* "$rootfs/usr/share/groff/"* "$rootfs/usr/share/lintian/"*
find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
rm -rf "$rootfs/var/lib/apt/lists/"* "$rootfs/var/cache/apt/"*.bin "$rootfs/var/cache/apt/archives/"*.deb \
       "$rootfs/var/log/"*.log "$rootfs/var/log/apt/"* "$rootfs/tmp/"*
mkdir -p "$rootfs/var/lib/apt/lists/partial"
: > "$rootfs/etc/resolv.conf"; : > "$rootfs/etc/hostname"   # the runtime mounts its own

ctr=$(b from --pull=false scratch)
mnt=$(b mount "$ctr")
tar -C "$rootfs" --numeric-owner -cf - . | tar -C "$mnt" --numeric-owner -xpf -
b umount "$ctr" >/dev/null
b config --cmd '["bash"]' --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --os linux --arch amd64 "$ctr"
b commit -q --rm --format oci "$ctr" "$TAG" >/dev/null
rm -rf "$rootfs"
log "base image $TAG committed"

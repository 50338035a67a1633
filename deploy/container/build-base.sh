#!/usr/bin/env bash
# Builds Ferry's base image from Debian's packages alone (no registry is reachable here): a
# `debootstrap --variant=minbase` root file system with the non-root user `ferry` (uid and gid 10001) and an
# empty /models, trimmed of documentation and package caches, then `podman import`ed.
#
#   deploy/container/build-base.sh            # builds localhost/ferry-base:bookworm unless it exists
#
# Environment: SUITE (bookworm), MIRROR (http://deb.debian.org/debian), BASE_IMAGE
# (localhost/ferry-base:$SUITE), ROOTFS_TAR (a tarball of the trimmed root file system: reused when it
# exists, written when it does not; CI keeps one for the length of a run), FORCE=1 to rebuild.
# Needs root, debootstrap and podman (apt-get install debootstrap podman runc).
set -euo pipefail

SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
BASE_IMAGE=${BASE_IMAGE:-localhost/ferry-base:$SUITE}
ROOTFS_TAR=${ROOTFS_TAR:-}
PODMAN=(podman --runtime /usr/sbin/runc)

if [[ ${FORCE:-0} != 1 ]] && "${PODMAN[@]}" image exists "$BASE_IMAGE"; then
    echo "build-base: $BASE_IMAGE exists (FORCE=1 rebuilds it)"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [[ -n $ROOTFS_TAR && -s $ROOTFS_TAR ]]; then
    echo "build-base: reusing the root file system in $ROOTFS_TAR"
    tarball=$ROOTFS_TAR
else
    rootfs=$work/rootfs
    echo "build-base: debootstrap --variant=minbase $SUITE from $MIRROR"
    debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
        tail -n 40 "$work/debootstrap.log"
        exit 1
    }
    # The user the image runs as, and the repository it serves, owned by it.
    chroot "$rootfs" groupadd --gid 10001 ferry
    chroot "$rootfs" useradd --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin ferry
    install -d -o 10001 -g 10001 -m 0755 "$rootfs/models"
    # Nothing at run time needs these: documentation, locales, apt's caches and lists, logs.
    rm -rf "$rootfs"/usr/share/{doc,man,info,locale,lintian} "$rootfs"/var/cache/apt/* \
        "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/debootstrap
    tarball=${ROOTFS_TAR:-$work/rootfs.tar}
    tar --numeric-owner -C "$rootfs" -cf "$tarball" .
fi

"${PODMAN[@]}" import --quiet --change 'CMD ["/bin/bash"]' "$tarball" "$BASE_IMAGE" >/dev/null
echo "build-base: $BASE_IMAGE ($(du -h "$tarball" | cut -f1) uncompressed)"

#!/usr/bin/env bash
# Builds the sessiond image (docker/Dockerfile) and the example app's image
# (docker/example-app.Dockerfile) without pulling anything: the binaries are compiled here,
# statically linked, and copied into images FROM scratch.
#
#   docker/build.sh
#
# Image names come from SESSIOND_IMAGE (default sessiond:local) and EXAMPLE_APP_IMAGE
# (default sessiond-example-app:local), the variables docker/compose.yaml reads. The build
# uses its own target directory (SESSIOND_DOCKER_TARGET_DIR, default target/docker): the
# static flags would otherwise invalidate the normal target directory, and keeping it makes
# the next build incremental.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
sessiond_image=${SESSIOND_IMAGE:-sessiond:local}
app_image=${EXAMPLE_APP_IMAGE:-sessiond-example-app:local}
target_dir=${SESSIOND_DOCKER_TARGET_DIR:-$repo/target/docker}
cargo=${CARGO:-cargo}

# The host's own triple (x86_64-unknown-linux-gnu or aarch64-unknown-linux-gnu): the images
# run on the engine of the machine that builds them. Naming it explicitly keeps RUSTFLAGS
# away from build scripts and proc macros, which cannot be linked statically.
triple=$(rustc -vV | sed -n 's/^host: //p')
case "$triple" in
  *-linux-gnu) ;;
  *) echo "docker/build.sh: needs a Linux glibc host, not $triple" >&2; exit 1 ;;
esac

echo "== building static binaries ($triple, into $target_dir)"
# CARGO_ENCODED_RUSTFLAGS would take precedence over the RUSTFLAGS below.
unset CARGO_ENCODED_RUSTFLAGS
# crt-static links glibc into the binaries, so they need nothing from the image. Stripped
# and without debug info: the image is small, and panics still report file and line.
RUSTFLAGS="-C target-feature=+crt-static" \
  CARGO_PROFILE_RELEASE_DEBUG=false \
  CARGO_PROFILE_RELEASE_STRIP=symbols \
  CARGO_TARGET_DIR="$target_dir" \
  "$cargo" build --release --target "$triple" \
  --manifest-path "$repo/Cargo.toml" \
  -p sessiond -p sessiond-cli -p sessiond-example-app

echo "== preparing the build context"
bin="$target_dir/$triple/release"
context="$target_dir/context"
rm -rf "$context"
mkdir -p "$context/volume/data"
# Owner-only, like the data directory sessiond creates itself. The owner is set by
# `COPY --chown` in the Dockerfile, so building needs no root on the host.
chmod 0700 "$context/volume/data"
cp "$bin/sessiond" "$bin/sessiond-cli" "$bin/sessiond-example-app" "$context/"
for file in sessiond.toml nsswitch.conf passwd group; do
  cp "$repo/docker/$file" "$context/"
done

echo "== building $sessiond_image and $app_image"
docker build --quiet -f "$repo/docker/Dockerfile" -t "$sessiond_image" "$context"
docker build --quiet -f "$repo/docker/example-app.Dockerfile" -t "$app_image" "$context"
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$sessiond_image"
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$app_image"

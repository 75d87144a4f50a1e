#!/usr/bin/env bash
# OpenSSL 1.1.1 and LibreSSL, built from source once and cached, for the TLS
# tests of those libraries (tests/tests/tls_openssl111_libressl_bpf.rs).
# Debian 12 packages neither; the sources come from two crates that vendor
# them: openssl-src 111.28.2 (OpenSSL 1.1.1w) and libressl-pnacl-sys 2.1.6
# (the LibreSSL 2.0.0 portable release, the only LibreSSL any registry we
# reach carries). Each is built shared and static (only the libraries: no
# apps, docs or tests; OpenSSL without the ciphers and protocols TLS between
# the tests' peers never uses, to keep a cold CI run short). Exports NETTAP_OPENSSL111 and NETTAP_LIBRESSL, each
# a prefix with include/ and lib/ (libssl.so.N, libcrypto.so.N, libssl.a,
# libcrypto.a). Sourced by ci/install.sh.

oldssl_root="${HOME}/.cache/nettap"
export NETTAP_OPENSSL111="${NETTAP_OPENSSL111:-$oldssl_root/openssl111/1.1.1w}"
export NETTAP_LIBRESSL="${NETTAP_LIBRESSL:-$oldssl_root/libressl/2.0.0}"

# Unpacks crate NAME at exact VERSION into DIR: cargo fetches it (with its
# checksum from the index) into its own cache, from which the .crate is
# untarred.
oldssl_crate() {
  local name="$1" version="$2" dir="$3" proj
  proj="$(mktemp -d)"
  mkdir -p "$proj/src" && : >"$proj/src/lib.rs"
  printf '[package]\nname = "fetch"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\n%s = "=%s"\n' \
    "$name" "$version" >"$proj/Cargo.toml"
  (cd "$proj" && cargo fetch -q)
  local crate
  crate="$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$name-$version.crate" | head -1)"
  rm -rf "$proj"
  mkdir -p "$dir" && tar -xzf "$crate" -C "$dir" --strip-components=1
}

# Runs a build command quietly; on failure shows the end of what it said.
oldssl_quiet() {
  local log
  log="$(mktemp)"
  if ! "$@" >"$log" 2>&1; then
    tail -40 "$log" >&2
    rm -f "$log"
    echo "ci/install.sh: failed: $*" >&2
    return 1
  fi
  rm -f "$log"
}

if [ ! -e "$NETTAP_OPENSSL111/.complete" ]; then
  echo "ci/install.sh: building OpenSSL 1.1.1w (once)"
  rm -rf "$NETTAP_OPENSSL111" && mkdir -p "$NETTAP_OPENSSL111"
  src="$NETTAP_OPENSSL111/build"
  oldssl_crate openssl-src 111.28.2+1.1.1w "$src"
  (cd "$src/openssl" &&
    oldssl_quiet ./config --prefix="$NETTAP_OPENSSL111" --openssldir="$NETTAP_OPENSSL111/ssl" \
      shared no-tests no-comp no-engine no-dtls no-ssl3 no-weak-ssl-ciphers no-srp no-ts no-ct \
      no-idea no-mdc2 no-rc2 no-rc5 no-md4 no-whirlpool no-camellia no-seed no-cast no-bf \
      no-aria no-sm2 no-sm3 no-sm4 no-siphash &&
    oldssl_quiet make -j2 build_libs)
  mkdir -p "$NETTAP_OPENSSL111/lib"
  cp -a "$src"/openssl/include "$NETTAP_OPENSSL111/include"
  cp -a "$src"/openssl/lib{ssl,crypto}.so* "$src"/openssl/lib{ssl,crypto}.a "$NETTAP_OPENSSL111/lib/"
  rm -rf "$src"
  touch "$NETTAP_OPENSSL111/.complete"
fi

if [ ! -e "$NETTAP_LIBRESSL/.complete" ]; then
  echo "ci/install.sh: building LibreSSL 2.0.0 (once)"
  rm -rf "$NETTAP_LIBRESSL" && mkdir -p "$NETTAP_LIBRESSL"
  src="$NETTAP_LIBRESSL/build"
  oldssl_crate libressl-pnacl-sys 2.1.6 "$src"
  # 2014's code meets today's compiler warnings: without -Werror it builds.
  sed -i 's/ -Werror//' "$src/libressl/configure"
  # libtool would compile every file twice (PIC for the shared library,
  # not for the static one): the static libraries are archived from the
  # shared ones' PIC objects instead, halving the build.
  (cd "$src/libressl" &&
    oldssl_quiet ./configure --prefix="$NETTAP_LIBRESSL" --enable-shared --disable-static &&
    oldssl_quiet make -j2 -C crypto && oldssl_quiet make -j2 -C ssl &&
    oldssl_quiet make -C crypto install && oldssl_quiet make -C ssl install &&
    oldssl_quiet make -C include install &&
    for l in crypto ssl; do
      find "$l" -path '*/.libs/*.o' -print0 | xargs -0 ar rcs "$NETTAP_LIBRESSL/lib/lib$l.a" || exit 1
    done)
  rm -rf "$src"
  touch "$NETTAP_LIBRESSL/.complete"
fi

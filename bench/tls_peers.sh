# Sourced by bench/tls_attach.sh and bench/tls_call_cost.sh: the TLS test
# peers they share, built as the tests build them. Sources the installers of
# the cached peers (NETTAP_RUSTLSPEER, NETTAP_BORINGPEER) and of OpenSSL
# 1.1.1w and LibreSSL (NETTAP_OPENSSL111, NETTAP_LIBRESSL).
source ci/install-rustls-peer.sh >&2
source ci/install-boring-peer.sh >&2
source ci/install-oldssl.sh >&2

# GnuTLS linked in as the tests link it (GnuTLS's own dependencies shared).
GNUTLS_STATIC=(-Wl,-Bstatic -lgnutls -Wl,-Bdynamic -lgmp -l:libunistring.so.2 -latomic -lnettle -lhogweed
  -ltasn1 -lidn2 -lp11-kit -lz -l:libzstd.so.1 -lbrotlienc -lbrotlidec)

# build_tlspeer OUT: the Go test peer (crypto/tls, net/http).
build_tlspeer() {
  (cd tests/programs/go/tlspeer && GOFLAGS=-buildvcs=false go build -o "$1" .)
}

# ossl_peer PREFIX shared|static OUT: the OpenSSL-API echo peer against the
# library installed at PREFIX (empty: the system's OpenSSL 3).
ossl_peer() {
  local cc=(gcc -O2 -w -o "$3" tests/programs/ossl_echo_peer.c)
  if [ -z "$1" ]; then
    if [ "$2" = shared ]; then "${cc[@]}" -lssl -lcrypto; else "${cc[@]}" -static -lssl -lcrypto; fi
  elif [ "$2" = shared ]; then
    "${cc[@]}" -I"$1/include" -L"$1/lib" -Wl,--disable-new-dtags,-rpath,"$1/lib" -lssl -lcrypto
  else
    "${cc[@]}" -I"$1/include" "$1/lib/libssl.a" "$1/lib/libcrypto.a" -ldl -lpthread
  fi
}

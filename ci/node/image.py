#!/usr/bin/env python3
"""Writes container images as OCI archives, without a daemon or a registry.

The published base images cannot be pulled here, so the base layer is made
from the files of this host's Debian packages (the same Debian release the
binaries were built on, so their glibc matches): `cc` is the equivalent of
gcr.io/distroless/cc-debian12 (glibc, libgcc, libstdc++, libssl, CA
certificates, time zones, /etc/passwd with root and nonroot), `scratch` is
empty. A second layer holds the image's own files.

    image.py dockerfile DOCKERFILE STAGE_DIR NAME OUTPUT
        The final stage of DOCKERFILE, as `docker build` would make it, with
        `COPY --from=build /out/X DEST` taken from STAGE_DIR/X (what the
        build stage would have written to /out). FROM, COPY --from=build,
        USER, WORKDIR, ENV, ENTRYPOINT, CMD and ARG are understood; anything
        else is refused.
    image.py files BASE NAME OUTPUT SRC=DEST... [--deb PACKAGE]... [--entrypoint JSON]
                   [--cmd JSON] [--user U] [--workdir DIR] [--env K=V]...
        BASE (`cc` or `scratch`), a layer with the files of the Debian
        PACKAGEs installed here (no documentation), and the SRC files.

NAME is the full reference (`docker.io/nettap/sensor:0.1.0`); OUTPUT is an
OCI image layout in a tar, which `ctr images import` reads. Layers are
written with fixed times and owners, so the same inputs give the same image.
"""

import argparse
import hashlib
import io
import json
import os
import re
import shlex
import stat
import subprocess
import sys
import tarfile

# Debian packages of the `cc` base (distroless cc-debian12's set, less what
# no program here loads) and the parts of them an image keeps.
CC_PACKAGES = ["base-files", "netbase", "tzdata", "libc6", "libgcc-s1", "libstdc++6", "libssl3"]
KEEP = re.compile(r"^/(etc|lib|lib64|usr/lib|usr/lib64|usr/share/zoneinfo)/")
DROP = re.compile(r"/(gconv|doc|man|info|lintian|locale|bug)(/|$)|^/etc/(init\.d|cron|logrotate)")
# Debian 12 merged /usr: the packages list /lib/…, the files live in /usr/lib/….
MERGED = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}
PASSWD = "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" \
    "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
GROUP = "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Layer:
    """An uncompressed layer tar, entries in the order added, fixed metadata."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)
        self.dirs = set()
        self.entries = 0

    def _info(self, path, kind, mode, uid=0):
        ti = tarfile.TarInfo(path.lstrip("/"))
        ti.type, ti.mode, ti.mtime, ti.uid, ti.gid = kind, mode, 0, uid, uid
        self.entries += 1
        return ti

    def dir(self, path, mode=0o755, uid=0):
        path = path.rstrip("/")
        if not path or path in self.dirs:
            return
        self.dir(os.path.dirname(path))
        self.dirs.add(path)
        self.tar.addfile(self._info(path, tarfile.DIRTYPE, mode, uid))

    def file(self, path, data, mode=0o644):
        self.dir(os.path.dirname(path))
        ti = self._info(path, tarfile.REGTYPE, mode)
        ti.size = len(data)
        self.tar.addfile(ti, io.BytesIO(data))

    def symlink(self, path, target):
        self.dir(os.path.dirname(path))
        ti = self._info(path, tarfile.SYMTYPE, 0o777)
        ti.linkname = target
        self.tar.addfile(ti)

    def host(self, src, dest):
        """A host file (or symlink, kept as one) at `dest`."""
        st = os.lstat(src)
        if stat.S_ISLNK(st.st_mode):
            self.symlink(dest, os.readlink(src))
        elif stat.S_ISREG(st.st_mode):
            with open(src, "rb") as f:
                self.file(dest, f.read(), stat.S_IMODE(st.st_mode))

    def finish(self):
        self.tar.close()
        return self.buf.getvalue()


def package_files(pkg):
    out = subprocess.run(["dpkg-query", "-L", pkg], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"image.py: Debian package {pkg} is not installed (the `cc` base is made from it)")
    return out.stdout.split("\n")


def in_image(path):
    """Where a packaged path lives under merged /usr."""
    top, _, rest = path.lstrip("/").partition("/")
    return "/" + (MERGED[top] + "/" + rest if top in MERGED else path.lstrip("/"))


def add_packages(layer, packages, keep=lambda p: True):
    """The files of installed Debian `packages` (where `keep`), at their merged-/usr paths."""
    seen = set()
    for pkg in packages:
        for p in sorted(package_files(pkg)):
            # Directories are made with their files; /lib, /bin… are the base's links.
            if not p.startswith("/") or p.strip("/") in MERGED or not keep(p) or DROP.search(p) \
                    or os.path.isdir(p) and not os.path.islink(p):
                continue
            dest = in_image(p)
            if dest not in seen and os.path.lexists(p):
                seen.add(dest)
                layer.host(p, dest)


def base_layer(kind):
    layer = Layer()
    if kind == "scratch":
        return layer
    if kind != "cc":
        sys.exit(f"image.py: unknown base {kind}")
    for top, target in sorted(MERGED.items()):
        layer.dir("/" + target)
        layer.symlink("/" + top, target)
    add_packages(layer, CC_PACKAGES, KEEP.match)
    # Made by update-ca-certificates on the host, not shipped in a package.
    layer.host("/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/certs/ca-certificates.crt")
    layer.file("/etc/passwd", PASSWD.encode())
    layer.file("/etc/group", GROUP.encode())
    layer.file("/etc/nsswitch.conf", b"passwd: files\ngroup: files\nhosts: files dns\n")
    layer.dir("/tmp", 0o1777)
    layer.dir("/root", 0o700)
    layer.dir("/home/nonroot", 0o700, uid=65532)
    return layer


def blob(blobs, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return digest


def write_archive(output, name, layers, config):
    """An OCI image layout in a tar: the (non-empty) layers, config, manifest, index."""
    blobs = {}
    descs, diff_ids = [], []
    for data in (layer.finish() for layer in layers if layer.entries):
        d = blob(blobs, data)
        diff_ids.append(d)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": len(data)})
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": config,
                      "rootfs": {"type": "layers", "diff_ids": diff_ids}}, sort_keys=True).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": blob(blobs, cfg), "size": len(cfg)},
                           "layers": descs}, sort_keys=True).encode()
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "digest": blob(blobs, manifest), "size": len(manifest),
                            "platform": {"architecture": "amd64", "os": "linux"},
                            "annotations": {"io.containerd.image.name": name,
                                            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]}}]}
    tmp = output + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        def add(path, data):
            ti = tarfile.TarInfo(path)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 0
            tar.addfile(ti, io.BytesIO(data))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", json.dumps(index, sort_keys=True).encode())
        for d, data in sorted(blobs.items()):
            add("blobs/sha256/" + d.split(":")[1], data)
    os.replace(tmp, output)


def image_config(user=None, workdir=None, env=(), entrypoint=None, cmd=None):
    cfg = {"Env": [PATH_ENV, "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt", *env]}
    for key, value in (("User", user), ("WorkingDir", workdir), ("Entrypoint", entrypoint), ("Cmd", cmd)):
        if value is not None:
            cfg[key] = value
    return cfg


def dockerfile_lines(path):
    """Instructions (continuations joined, comments dropped) as (WORD, rest)."""
    text = re.sub(r"\\\n", " ", open(path).read())
    for line in text.split("\n"):
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            yield word.upper(), rest.strip()


# The published bases the Dockerfiles name, and their local equivalents:
# (base layer, default user, working directory).
BASES = {
    "gcr.io/distroless/cc-debian12": ("cc", None, None),
    "gcr.io/distroless/cc-debian12:nonroot": ("cc", "65532", "/home/nonroot"),
}


def from_dockerfile(dockerfile, stage_dir, name, output):
    args, stages = {}, []
    for word, rest in dockerfile_lines(dockerfile):
        if word == "ARG" and not stages:
            k, _, v = rest.partition("=")
            args[k] = v.strip('"')
        elif word == "FROM":
            ref = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), ""), rest.split()[0])
            stages.append((ref, []))
        elif stages:
            stages[-1][1].append((word, rest))
    ref, instructions = stages[-1]
    if ref not in BASES:
        sys.exit(f"image.py: no local equivalent of the base image {ref} (known: {', '.join(BASES)})")
    base, user, workdir = BASES[ref]
    top, env, entrypoint, cmd = Layer(), [], None, None
    for word, rest in instructions:
        if word == "COPY":
            parts = shlex.split(rest)
            if parts[0] != "--from=build" or len(parts) != 3 or not parts[1].startswith("/out/"):
                sys.exit(f"image.py: only `COPY --from=build /out/FILE DEST` can be built here: COPY {rest}")
            src = os.path.join(stage_dir, parts[1][len("/out/"):])
            if not os.path.isfile(src):
                sys.exit(f"image.py: {src} is missing (the build stage's {parts[1]})")
            top.host(src, parts[2])
        elif word == "USER":
            user = rest
        elif word == "WORKDIR":
            workdir = rest
        elif word == "ENV":
            env.append(rest.replace(" ", "=", 1) if "=" not in rest else rest)
        elif word == "ENTRYPOINT":
            entrypoint = json.loads(rest)
        elif word == "CMD":
            cmd = json.loads(rest)
        elif word != "ARG":
            sys.exit(f"image.py: {word} in the final stage of {dockerfile} cannot be built here")
    config = image_config(user, workdir, env, entrypoint, cmd)
    write_archive(output, name, [base_layer(base), top], config)


def from_files(a):
    debs = Layer()
    add_packages(debs, a.deb)
    top = Layer()
    for spec in a.files:
        src, _, dest = spec.partition("=")
        top.host(src, dest)
    config = image_config(a.user, a.workdir, a.env, a.entrypoint and json.loads(a.entrypoint),
                          a.cmd and json.loads(a.cmd))
    write_archive(a.output, a.name, [base_layer(a.base), debs, top], config)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    d = sub.add_parser("dockerfile")
    for arg in ("dockerfile", "stage_dir", "name", "output"):
        d.add_argument(arg)
    f = sub.add_parser("files")
    for arg in ("base", "name", "output"):
        f.add_argument(arg)
    f.add_argument("files", nargs="*", metavar="SRC=DEST")
    for opt in ("--entrypoint", "--cmd", "--user", "--workdir"):
        f.add_argument(opt)
    f.add_argument("--env", action="append", default=[])
    f.add_argument("--deb", action="append", default=[])
    a = p.parse_args()
    if a.mode == "dockerfile":
        from_dockerfile(a.dockerfile, a.stage_dir, a.name, a.output)
    else:
        from_files(a)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Regenerates the committed seed corpora in fuzz/corpus/<target>/.

Seeds come from berth's own unit tests (image references, hosts.toml files
and auth challenges are extracted from the test sources), from manifests
shaped like real registry answers, and from small tar layers built here
(plain, gzip and zstd) that exercise every entry type unpack_layer handles,
including hostile ones. Output is deterministic; run from anywhere:
    python3 fuzz/make-corpus.py
"""
import base64
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import zlib

FUZZ = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(FUZZ, "..", "imageservice", "src")
CANARY = "/tmp/berth-fuzz-canary"


def put(target, name, data):
    d = os.path.join(FUZZ, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def rust_strings(path):
    """Plain and raw string literals in a Rust file (a module's tests.rs)."""
    text = open(path, encoding="utf-8").read()
    out = []
    for m in re.finditer(r'r#"(.*?)"#|"((?:[^"\\]|\\.)*)"', text, re.S):
        if m.group(1) is not None:
            out.append(m.group(1))
        else:
            s = m.group(2)
            s = s.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
            out.append(s)
    return out


def uniq(items):
    seen, out = set(), []
    for i in items:
        if i not in seen:
            seen.add(i)
            out.append(i)
    return out


def references():
    strings = [s for s in rust_strings(os.path.join(SRC, "reference", "tests.rs"))
               if 0 < len(s) < 300 and "{" not in s and " " not in s]
    strings += ["busybox", "docker.io/library/busybox:latest", "localhost:5000/a/b:c",
                "registry.k8s.io/pause:3.10", "[::1]:5000/img@sha256:" + "a" * 64,
                "quay.io/user/app:v1@sha256:" + "0123456789abcdef" * 4,
                "sha256:" + "f" * 64, "f" * 12, "UPPER/case", "a/" * 40 + "z"]
    for i, s in enumerate(uniq(strings)[:120]):
        put("reference", f"ref-{i:03}", s)


def hosts():
    files = [s for s in rust_strings(os.path.join(SRC, "hosts", "tests.rs"))
             if ("=" in s or "[" in s) and len(s) < 2000]
    files += [
        'server = "https://registry-1.docker.io"\n\n[host."https://mirror.example"]\n'
        '  capabilities = ["pull", "resolve"]\n  ca = "/etc/certs/mirror.pem"\n'
        '  skip_verify = false\n  [host."https://mirror.example".header]\n'
        '    x-custom = ["a", "b"]\n',
        'server = "http://127.0.0.1:5000"\nskip_verify = true\nca = ["a.pem", "b.pem"]\n'
        'client = [["c.cert", "c.key"], "d.pem"]\noverride_path = true\n',
    ]
    hostnames = ["docker.io", "127.0.0.1:5000", "localhost", "[::1]:443", "reg.example:5000"]
    for i, f in enumerate(uniq(files)):
        put("hosts_toml", f"hosts-{i:03}", hostnames[i % len(hostnames)] + "\n" + f)


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifests():
    config = {
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": ["sh"], "User": "1000:1000", "WorkingDir": "/",
                   "Labels": {"org.opencontainers.image.title": "busybox"},
                   "Volumes": {"/data": {}}, "StopSignal": "SIGTERM"},
        "created": "2024-09-26T21:31:42Z",
        "history": [{"created": "2024-09-26T21:31:42Z",
                     "created_by": "BusyBox 1.37.0 (glibc), Debian 12"}],
        "rootfs": {"type": "layers", "diff_ids": [digest(b"layer-0"), digest(b"layer-1")]},
    }
    cbytes = json.dumps(config, indent=2).encode()
    layers = [{"mediaType": mt, "digest": digest(bytes([i])), "size": 2150 + i}
              for i, mt in enumerate([
                  "application/vnd.oci.image.layer.v1.tar+gzip",
                  "application/vnd.oci.image.layer.v1.tar+zstd",
                  "application/vnd.docker.image.rootfs.diff.tar.gzip",
                  "application/vnd.oci.image.layer.v1.tar"])]
    oci_manifest = {"schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": digest(cbytes), "size": len(cbytes)},
                    "layers": layers,
                    "annotations": {"org.opencontainers.image.created": "2024-09-26"}}
    docker_manifest = dict(oci_manifest)
    docker_manifest["mediaType"] = "application/vnd.docker.distribution.manifest.v2+json"
    docker_manifest["config"] = dict(oci_manifest["config"],
                                     mediaType="application/vnd.docker.container.image.v1+json")
    plats = [("amd64", None), ("arm", "v6"), ("arm", "v7"), ("arm64", "v8"), ("386", None),
             ("ppc64le", None), ("riscv64", None), ("s390x", None)]
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [dict({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                 "digest": digest(a.encode() + (v or "").encode()),
                                 "size": 610},
                                platform=dict({"architecture": a, "os": "linux"},
                                              **({"variant": v} if v else {})))
                           for a, v in plats]
             + [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                 "digest": digest(b"attestation"), "size": 566,
                 "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
                 "platform": {"architecture": "unknown", "os": "unknown"}}]}
    docker_list = dict(index, mediaType="application/vnd.docker.distribution.manifest.list.v2+json")
    no_media_index = {k: v for k, v in index.items() if k != "mediaType"}
    schema1 = {"schemaVersion": 1, "name": "library/busybox", "tag": "latest",
               "architecture": "amd64", "fsLayers": [{"blobSum": digest(b"x")}]}
    # first byte: index into the target's list of claimed Content-Types
    seeds = [(2, oci_manifest), (3, docker_manifest), (0, index), (1, docker_list),
             (0, no_media_index), (4, schema1), (5, config), (7, {"layers": []})]
    for i, (ct, doc) in enumerate(seeds):
        put("manifest", f"manifest-{i:02}", bytes([ct]) + json.dumps(doc, indent=1).encode())
    put("manifest", "config-compact", bytes([5]) + json.dumps(config).encode())


def challenges():
    strings = [s for s in rust_strings(os.path.join(SRC, "registry", "tests.rs"))
               if s.split(" ")[0].lower() in ("bearer", "basic", "negotiate")]
    strings += ['Bearer realm="https://auth.docker.io/token",service="registry.docker.io"',
                'Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:u/r:pull"',
                'Basic realm="basic-realm"', 'bearer realm=http://127.0.0.1:1/t, service=x ,',
                'Bearer  realm = "a,b" , service="s"', 'Bearer realm="unterminated']
    for i, s in enumerate(uniq(strings)):
        put("auth_challenge", f"challenge-{i:02}", s)


class Layer:
    def __init__(self, fmt=tarfile.GNU_FORMAT):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=fmt)

    def add(self, name, kind=tarfile.REGTYPE, data=b"", link="", mode=0o644, pax=None,
            uid=0, gid=0):
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.uid, ti.gid = kind, mode, uid, gid
        ti.mtime, ti.linkname = 1500000000, link
        if pax:
            ti.pax_headers = pax
        if kind == tarfile.REGTYPE:
            ti.size = len(data)
            self.tar.addfile(ti, io.BytesIO(data))
        else:
            self.tar.addfile(ti)
        return self

    def bytes(self):
        self.tar.close()
        return self.buf.getvalue()


def layers():
    D, S, H, C, F = tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE
    seeds = {
        "basic": Layer().add("./", D, mode=0o755).add("bin/", D, mode=0o755)
        .add("bin/sh", data=b"#!/bin/busybox\n" * 8, mode=0o755)
        .add("etc/", D).add("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n")
        .add("bin/ls", S, link="busybox").add("bin/cat", H, link="bin/sh")
        .add("dev/", D).add("dev/fifo", F).add("tmp/", D, mode=0o1777)
        .add("usr/bin/suid", data=b"x", mode=0o4755, uid=1000, gid=1000),
        "whiteouts": Layer().add("etc/.wh.passwd").add("dir/", D).add("dir/.wh..wh..opq")
        .add("bin/.wh.sh").add(".wh.gone"),
        "pax-xattrs": Layer(tarfile.PAX_FORMAT)
        .add("file", data=b"caps", pax={"SCHILY.xattr.security.capability": "\x01\x00\x00\x02",
                                        "SCHILY.xattr.user.comment": "hello",
                                        "SCHILY.xattr.trusted.overlay.opaque": "y",
                                        "mtime": "1500000000.123456789"})
        .add("long/" + "n" * 120 + "/" + "m" * 120, data=b"long name", pax={"path": "long/" + "n" * 200}),
        "gnu-longname": Layer().add("a" * 150 + "/", D).add("a" * 150 + "/" + "b" * 150, data=b"gnu")
        .add("l", S, link="t" * 200),
        "copy-up-hardlink": Layer().add("new", H, link="etc/passwd")
        .add("sub", H, link="dir/sub/file").add("dir/", D).add("dir/x", H, link="new"),
        "replace-dir-with-file": Layer().add("d/", D).add("d/f", data=b"1").add("d", data=b"now a file")
        .add("d/", D).add("./", D, mode=0o700),
        "devices": Layer().add("dev/null", C, mode=0o666).add("dev/blk", tarfile.BLKTYPE),
        # hostile: each must be refused or stay inside dest
        "escape-dotdot": Layer().add("../outside/file", data=b"pwned").add("a/../../x", data=b"x"),
        "escape-absolute": Layer().add(CANARY + "/file", data=b"pwned").add("/etc/x", data=b"x"),
        "escape-symlink-dir": Layer().add("out", S, link="../outside").add("out/file", data=b"pwned")
        .add("abs", S, link=CANARY).add("abs/file", data=b"pwned"),
        "escape-symlink-parent": Layer().add("d", S, link="/").add("d/tmp/berth-fuzz-canary/file",
                                                                  data=b"pwned"),
        "escape-hardlink": Layer().add("h", H, link=CANARY + "/file").add("h2", H, link="../outside/file")
        .add("s", S, link="../outside/file").add("h3", H, link="s"),
        "escape-lower-symlink": Layer().add("x", H, link="canary/file").add("y", H, link="dir/out/file"),
        "escape-symlink-then-hardlink": Layer().add("c", S, link=CANARY).add("l", H, link="c/file")
        .add("c/new", data=b"pwned"),
        "symlink-swap": Layer().add("a/", D).add("a/f", data=b"1").add("a", S, link=CANARY)
        .add("a/f", data=b"pwned"),
        "nul-and-empty": Layer().add("", data=b"x").add("./.", D).add("a/./b//c", data=b"ok"),
    }
    # a sparse file (GNU sparse, old format), built by GNU tar itself
    sparse_dir = "/tmp/berth-make-corpus"
    shutil.rmtree(sparse_dir, ignore_errors=True)
    os.makedirs(sparse_dir)
    with open(os.path.join(sparse_dir, "sparse"), "wb") as f:
        f.write(b"head")
        f.seek(65536)
        f.write(b"tail")
    for fmt in ("gnu", "posix"):
        # PAX sparse 0.0, no pid in the header names, no atime/ctime: reproducible
        pax = ["--sparse-version=0.0",
               "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime"]
        out = subprocess.run(["tar", f"--format={fmt}", "--sparse", "--mtime=@1500000000",
                              "--owner=0", "--group=0"] + (pax if fmt == "posix" else []) +
                             ["-C", sparse_dir, "-cf", "-", "sparse"],
                             check=True, capture_output=True).stdout
        seeds[f"sparse-{fmt}"] = out
    shutil.rmtree(sparse_dir)
    for name, layer in seeds.items():
        raw = layer if isinstance(layer, bytes) else layer.bytes()
        # Drop tarfile's record padding (10 KiB), keep the end-of-archive marker.
        body = raw.rstrip(b"\0")
        body += b"\0" * (-len(body) % 512)
        raw = body + b"\0" * 1024
        put("unpack_layer", f"{name}.tar", b"\x00" + raw)
        if name in ("basic", "whiteouts", "escape-symlink-dir", "sparse-gnu"):
            put("unpack_layer", f"{name}.tar.gz", b"\x01" + gzip.compress(raw, mtime=0))
            z = subprocess.run(["zstd", "-q", "-c", "-19"], input=raw, check=True,
                               capture_output=True).stdout
            put("unpack_layer", f"{name}.tar.zst", b"\x02" + z)


def spdy_dictionary():
    text = open(os.path.join(FUZZ, "..", "proto", "src", "lib.rs"), encoding="utf-8").read()
    fn = text[text.index("pub fn spdy_dictionary"):]
    words = re.findall(r'"([^"]*)"', fn[fn.index("WORDS"):fn.index("];")])
    tail = re.search(r'const TAIL: &str = "([^"]*)";', fn).group(1)
    d = b"".join(len(w).to_bytes(4, "big") + w.encode() for w in words) + tail.encode()
    assert len(d) == 1423, len(d)  # the draft's dictionary is 1423 bytes
    return d


def header_block(pairs):
    out = len(pairs).to_bytes(4, "big")
    for k, v in pairs:
        out += len(k).to_bytes(4, "big") + k.encode() + len(v).to_bytes(4, "big") + v.encode()
    return out


class SpdyClient:
    """A client's side of one connection: one zlib stream for all header blocks."""

    def __init__(self, dictionary):
        self.z = zlib.compressobj(zdict=dictionary)

    def headers(self, pairs):
        return self.z.compress(header_block(pairs)) + self.z.flush(zlib.Z_SYNC_FLUSH)


def control(kind, body, flags=0):
    return bytes([0x80, 3]) + kind.to_bytes(2, "big") + bytes([flags]) + len(body).to_bytes(3, "big") + body


def syn_stream(sid, block, flags=0):
    return control(1, sid.to_bytes(4, "big") + bytes(4) + bytes([0, 0]) + block, flags)


def data(sid, payload, fin=False):
    return sid.to_bytes(4, "big") + bytes([1 if fin else 0]) + len(payload).to_bytes(3, "big") + payload


def streaming():
    d = spdy_dictionary()
    c = SpdyClient(d)
    exec_session = b"".join([
        control(4, bytes(4)),  # SETTINGS, no entries
        syn_stream(1, c.headers([("streamtype", "error")])),
        syn_stream(3, c.headers([("streamtype", "stdin")])),
        syn_stream(5, c.headers([("streamtype", "stdout")])),
        syn_stream(7, c.headers([("streamtype", "resize")])),
        data(3, b"echo hello\n"),
        data(7, b'{"Width":80,"He'), data(7, b'ight":24}{"Width":120,"Height":40}'),
        control(6, (1).to_bytes(4, "big")),  # PING
        control(9, (3).to_bytes(4, "big") + (65536).to_bytes(4, "big")),  # WINDOW_UPDATE
        control(8, (5).to_bytes(4, "big") + c.headers([("x-extra", "1")])),  # HEADERS
        data(3, b"", fin=True),
        control(3, (5).to_bytes(4, "big") + (5).to_bytes(4, "big")),  # RST_STREAM CANCEL
        control(7, bytes(8)),  # GOAWAY
    ])
    c = SpdyClient(d)
    port_forward = b"".join([
        syn_stream(1, c.headers([("streamtype", "error"), ("port", "80"), ("requestid", "0")])),
        syn_stream(3, c.headers([("streamtype", "data"), ("port", "80"), ("requestid", "0")])),
        data(3, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        syn_stream(5, c.headers([("streamtype", "data"), ("port", "8080"), ("requestid", "7")])),
    ])
    # issue 14: bytes after the end of a zlib stream made the decoder spin
    attack = syn_stream(1, zlib.compress(b"\0\0\0\0") + b"\0")
    c = SpdyClient(d)
    bomb = syn_stream(1, c.headers([("streamtype", "x" * 70000)]))
    c = SpdyClient(d)
    many = syn_stream(1, c.headers([(f"h{i}", "v") for i in range(70)]))
    c = SpdyClient(d)
    first = syn_stream(1, c.headers([("streamtype", "stdout")]))
    restart = syn_stream(3, SpdyClient(d).headers([("streamtype", "stdin")]))  # new zlib stream mid-connection
    for name, frames in [("exec", exec_session), ("portforward", port_forward), ("zlib-attack", attack),
                         ("header-bomb", bomb), ("too-many-headers", many),
                         ("dictionary-mid-stream", first + restart),
                         ("truncated", exec_session[:100]), ("oversized-head", control(0, b"")[:5] + b"\xff\xff\xff")]:
        put("spdy_frames", name, frames)

    # spdy_headers: even first byte = plain block, odd = raw compressed blocks split at ff ff ff
    plain = [
        [("streamtype", "error")],
        [("streamtype", "data"), ("port", "80"), ("requestid", "0")],
        [("StreamType", "Stdin"), ("x", "a\0b")],
        [],
        [(f"h{i}", "v") for i in range(65)],
    ]
    for i, pairs in enumerate(plain):
        put("spdy_headers", f"plain-{i}", b"\x00" + header_block(pairs))
    put("spdy_headers", "plain-truncated", b"\x00" + header_block([("streamtype", "stdout")])[:-3])
    put("spdy_headers", "plain-huge-length", b"\x00" + (1).to_bytes(4, "big") + b"\xff\xff\xff\xf0ab")
    c = SpdyClient(d)
    raw = b"\xff\xff\xff".join(c.headers(p) for p in plain[:3])
    put("spdy_headers", "raw-connection", b"\x01" + raw)
    put("spdy_headers", "raw-zlib-attack", b"\x01" + zlib.compress(b"\0\0\0\0") + b"\0")
    put("spdy_headers", "raw-stream-end", b"\x01" + zlib.compress(header_block(plain[0]), 9))

    # ws_channel: bit 0 base64 protocol, bit 1 text message, bits 2.. where to cut for the resize stream
    ws = [
        (0, b"\x00echo hi\n"), (2, b"\x01text on a binary protocol"), (1, b"\x02binary on base64"),
        (3, b"0" + base64.b64encode(b"echo hi\n")), (3, b"4" + base64.b64encode(b'{"Width":80,"Height":24}')),
        (3, "\u00e9AAAA".encode()),  # issue 14: a multi-byte first character panicked
        (3, b"1QUJD="), (3, b"9"), (3, b"x" + base64.b64encode(b"no digit")),
        (0 | (5 << 2), b'{"Width":80,"Height":24}'),
        (0 | (12 << 2), b'{"Width":80,"Height":24}{"Width":100,"Height":30}'),
        (0 | (3 << 2), b'{"Width":70000,"Height":-1} {"Width":1'),
        (0, b""), (0 | (1 << 2), b"1e5"),
    ]
    for i, (flags, m) in enumerate(ws):
        put("ws_channel", f"ws-{i:02}", bytes([flags]) + m)


def h2_frame(kind, flags, sid, payload):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + sid.to_bytes(4, "big") + payload


def h2_literal(name_index, value, first=0x40):
    # a literal with an indexed name (first: 0x40 incremental indexing, 0x00 without)
    assert len(value) < 127
    return bytes([first | name_index, len(value)]) + value


def h2():
    # h2_authority: first byte the feeding piece size, then frames after the preface
    bad = h2_literal(1, b"run%2Fberth%2Fberth.sock") + b"\x83\x86" + h2_literal(4, b"/runtime.v1.RuntimeService/Version", 0)
    good = h2_literal(1, b"localhost") + b"\x83\x86\x84"
    settings = h2_frame(0x4, 0, 0, b"")
    seeds = {
        "valid": settings + h2_frame(0x1, 0x4, 1, good) + h2_frame(0x0, 0x1, 1, b"\0\0\0\0\0"),
        "socket-path": settings + h2_frame(0x1, 0x4, 1, bad) + h2_frame(0x0, 0x1, 1, b"\0\0\0\0\0")
        + h2_frame(0x1, 0x5, 3, b"\xbe\x83\x86\x84"),
        "padded-priority-continuation": h2_frame(0x1, 0x8 | 0x20, 1, b"\x03" + b"\0\0\0\0\x10" + bad[:5] + b"\0\0\0")
        + h2_frame(0x9, 0x4, 1, bad[5:]),
        "size-update": h2_frame(0x1, 0x4, 1, b"\x3f\xe1\x1f" + bad),
        "interleaved": h2_frame(0x1, 0, 1, bad[:3]) + h2_frame(0x0, 0, 1, b"x"),
        "huge-length": h2_frame(0x1, 0, 1, b"") [:3] + b"\xff\xff\xff",
    }
    for i, (name, data) in enumerate(seeds.items()):
        put("h2_authority", name, bytes([1 + i * 7]) + data)


if __name__ == "__main__":
    shutil.rmtree(os.path.join(FUZZ, "corpus"), ignore_errors=True)
    references()
    hosts()
    manifests()
    challenges()
    layers()
    streaming()
    h2()

#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Run protoc-c over the .proto tree and flatten its output into one directory.

protoc-c writes <dir>/<name>.pb-c.{c,h} mirroring each .proto path and includes headers by that path. meson outputs
cannot live in subdirectories, so every file is written as <outdir>/<basename>.pb-c.{c,h} and each
'#include "a/b/x.pb-c.h"' becomes '#include "x.pb-c.h"' (found next to the including file). Users include the
headers as "proto/x.pb-c.h" from the build root. Basenames must therefore be unique across the tree.

Usage: gen_pbc.py PROTOC_C PROTO_ROOT OUTDIR REL_PROTO...
"""
import os
import re
import subprocess
import sys
import tempfile

INCLUDE_RX = re.compile(r'^#include "(?:[^"/]+/)*([^"/]+\.pb-c\.h)"', re.M)


def main():
    protoc_c, root, outdir, protos = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    names = [os.path.splitext(os.path.basename(p))[0] for p in protos]
    if len(set(names)) != len(names):
        sys.exit('gen_pbc: .proto basenames must be unique: %s' % ' '.join(sorted(names)))
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([protoc_c, '--proto_path=' + root, '--c_out=' + tmp] + protos, check=True)
        for rel, name in zip(protos, names):
            for ext in ('.pb-c.c', '.pb-c.h'):
                src = os.path.join(tmp, os.path.splitext(rel)[0] + ext)
                with open(src, encoding='utf-8') as f:
                    text = INCLUDE_RX.sub(r'#include "\1"', f.read())
                dst = os.path.join(outdir, name + ext)
                old = None
                if os.path.exists(dst):
                    with open(dst, encoding='utf-8') as f:
                        old = f.read()
                if old != text:
                    with open(dst, 'w', encoding='utf-8') as f:
                        f.write(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())

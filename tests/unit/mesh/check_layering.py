#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Fail when mesh/ reaches for I/O, clocks, randomness or DPDK directly (STYLE.md section 2).

Comments and string literals are blanked before matching, so prose may name the forbidden APIs.
Usage: check_layering.py MESH_DIR
"""
import os
import re
import sys

FORBIDDEN = [
    (re.compile(r'#\s*include\s*[<"]rte_'), 'DPDK header'),
    (re.compile(r'\brte_\w+'), 'DPDK symbol'),
    (re.compile(r'#\s*include\s*[<"]sys/socket\.h[>"]'), 'sys/socket.h'),
    (re.compile(r'#\s*include\s*[<"]sys/epoll\.h[>"]'), 'sys/epoll.h'),
    (re.compile(r'\bepoll_\w+\s*\('), 'epoll call'),
    (re.compile(r'\bclock_gettime\s*\('), 'clock_gettime'),
    (re.compile(r'\bgettimeofday\s*\('), 'gettimeofday'),
    (re.compile(r'\btime\s*\(\s*(NULL|0|&)'), 'time()'),
    (re.compile(r'(?<![\w.>])(s?rand|random|srandom|rand_r|drand48)\s*\('), 'libc randomness'),
    (re.compile(r'\bgetrandom\s*\('), 'getrandom'),
    (re.compile(r'(?<![\w.>])(socket|connect|accept4?|bind|listen|recv|send|recvfrom|sendto|sendmsg|recvmsg)\s*\('),
     'socket call'),
]


def strip_comments_and_strings(text):
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith('/*', i):
            j = text.find('*/', i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r'[^\n]', ' ', text[i:j]))
            i = j
        elif text.startswith('//', i):
            j = text.find('\n', i)
            j = n if j < 0 else j
            out.append(' ' * (j - i))
            i = j
        elif c == '"' and not re.search(r'#\s*include\s*$', text[text.rfind('\n', 0, i) + 1:i]):
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == '\\' else 1
            out.append('"' + ' ' * (j - i - 1) + '"')
            i = j + 1
        else:
            out.append(c)
            i += 1
    return ''.join(out)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else 'mesh'
    bad = 0
    files = 0
    for dirpath, _, names in os.walk(root):
        for name in sorted(names):
            if not name.endswith(('.c', '.h', '.def')):
                continue
            files += 1
            path = os.path.join(dirpath, name)
            with open(path, encoding='utf-8') as f:
                code = strip_comments_and_strings(f.read())
            for lineno, line in enumerate(code.splitlines(), 1):
                for rx, what in FORBIDDEN:
                    if rx.search(line):
                        print(f'{path}:{lineno}: forbidden in mesh/: {what}: {line.strip()}')
                        bad += 1
    print(f'checked {files} files under {root}: {bad} violation(s)')
    return 1 if bad or files == 0 else 0


if __name__ == '__main__':
    sys.exit(main())

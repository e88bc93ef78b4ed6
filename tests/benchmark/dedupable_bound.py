#!/usr/bin/env python3
"""At most how much data can any block-level dedupe free on a filesystem? (issue 10: "net freed
... when at most 2.79 GiB of data can go")

    dedupable_bound.py DIR DATA_USED_BYTES

Walks every regular file under DIR (every snapshot of a backup directory), maps each 4 KiB block
of it to its physical address with FIEMAP, and hashes the content of each physical block once
(read through the first file seen to hold it). After any dedupe each distinct content still
needs a block of its own, and dedupe shares whole blocks at the same offset within a block, so
DATA_USED_BYTES (`btrfs filesystem df`'s data used, for the filesystem DIR is on) minus 4 KiB per
distinct content is an upper bound on the data any dedupe can free. A file's last, partial
block counts as its bytes padded with zeros, as it is on disk. Inline extents are metadata and
are left out; a compressed extent's blocks are hashed at every reference, as they read (none in
the benchmark's series). Prints one line: `bound_bytes distinct_bytes referenced_bytes files`.
"""
import fcntl
import hashlib
import os
import struct
import sys

BLOCK = 4096
FS_IOC_FIEMAP = 0xC020660B
FIEMAP_HEADER = struct.Struct("=QQIIII")           # start, length, flags, mapped, count, reserved
FIEMAP_EXTENT = struct.Struct("=QQQQQIIII")        # logical, physical, length, 2 reserved, flags, 3 reserved
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_EXTENT_LAST, FIEMAP_EXTENT_ENCODED, FIEMAP_EXTENT_DATA_INLINE = 0x1, 0x8, 0x200
EXTENTS_PER_CALL = 256
MAX_READ = 8 << 20


def extents(fd):
    """(logical, physical, length, flags) of every extent of the open file, in order."""
    start = 0
    while True:
        buf = bytearray(FIEMAP_HEADER.size + EXTENTS_PER_CALL * FIEMAP_EXTENT.size)
        FIEMAP_HEADER.pack_into(buf, 0, start, (1 << 64) - 1 - start, FIEMAP_FLAG_SYNC, 0, EXTENTS_PER_CALL, 0)
        fcntl.ioctl(fd, FS_IOC_FIEMAP, buf)
        mapped = FIEMAP_HEADER.unpack_from(buf, 0)[3]
        if mapped == 0:
            return
        for i in range(mapped):
            logical, physical, length, _, _, flags, _, _, _ = FIEMAP_EXTENT.unpack_from(
                buf, FIEMAP_HEADER.size + i * FIEMAP_EXTENT.size)
            yield logical, physical, length, flags
            if flags & FIEMAP_EXTENT_LAST:
                return
        start = logical + length


def main():
    top, data_used = sys.argv[1], int(sys.argv[2])
    seen = {}          # physical block address -> digest of its content
    distinct = set()   # digests
    referenced = files = 0
    for d, dirs, names in os.walk(top):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(d, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            files += 1
            fd = os.open(path, os.O_RDONLY | os.O_NOATIME)
            try:
                size = os.fstat(fd).st_size
                for logical, physical, length, flags in extents(fd):
                    if flags & FIEMAP_EXTENT_DATA_INLINE:
                        continue
                    length = min(length, -(-size // BLOCK) * BLOCK - logical)
                    referenced += max(length, 0)
                    hash_extent(fd, logical, physical, length, {} if flags & FIEMAP_EXTENT_ENCODED else seen, distinct)
            finally:
                os.close(fd)
    distinct_bytes = len(distinct) * BLOCK
    print(data_used - distinct_bytes, distinct_bytes, referenced, files)


def hash_extent(fd, logical, physical, length, seen, distinct):
    """Hashes each block of one extent that no file showed before; reads runs of them at once."""
    block = 0
    blocks = length // BLOCK
    while block < blocks:
        if physical + block * BLOCK in seen:
            distinct.add(seen[physical + block * BLOCK])
            block += 1
            continue
        run = block
        while run < blocks and run - block < MAX_READ // BLOCK and physical + run * BLOCK not in seen:
            run += 1
        data = os.pread(fd, (run - block) * BLOCK, logical + block * BLOCK)
        for i in range(run - block):
            chunk = data[i * BLOCK:(i + 1) * BLOCK].ljust(BLOCK, b"\0")
            digest = hashlib.blake2b(chunk, digest_size=16).digest()
            seen[physical + (block + i) * BLOCK] = digest
            distinct.add(digest)
        block = run


if __name__ == "__main__":
    main()

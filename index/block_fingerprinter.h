// Fingerprinting the changed blocks of many files at once: blocks of uncompressed checksummed
// extents from the checksum tree, in tree searches shared by all of them (no file data read);
// the rest (a compressed piece, a nodatasum file, a sector the tree no longer holds) from
// their bytes, checksummed as the kernel would (index/fingerprint.h).
#pragma once

#include "index/changed_blocks.h"
#include "index/fingerprint.h"
#include "snapshots/kernel/file_handle.h"

#include <cstdint>
#include <vector>

namespace snapdedupe {

// What fingerprinting took, in bytes of blocks.
struct FingerprintCounts {
    uint64_t from_csums = 0; // fingerprinted from the checksum tree: nothing read
    uint64_t read = 0;       // read from their files to fingerprint them

    uint64_t total() const { return from_csums + read; } // the report's bytes_hashed
};

// Some blocks of one file, and the file open (O_NOATIME) in case they must be read.
struct FileBlocks {
    LabeledFd file;
    InodeHandle handle;
    std::vector<DataBlock> blocks;
};

class BlockFingerprinter {
public:
    // `filesystem`: any directory of it (TREE_SEARCH_V2 names tree 7 through it); it must
    // outlive the fingerprinter.
    BlockFingerprinter(const LabeledFd& filesystem, ChecksumInfo info);

    // The fingerprint of every block of every file: out[f][b] for files[f].blocks[b]. Throws
    // SysError (a read that fails, a file that ends before its block).
    std::vector<std::vector<Fingerprint>> fingerprint(const std::vector<FileBlocks>& files, FingerprintCounts& counts);

    const ChecksumInfo& info() const { return info_; }

private:
    const LabeledFd& filesystem_;
    ChecksumInfo info_;
    std::vector<uint8_t> buffer_;
};

} // namespace snapdedupe

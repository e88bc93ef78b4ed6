#include "index/block_fingerprinter.h"

#include <optional>

namespace snapdedupe {

BlockFingerprinter::BlockFingerprinter(const LabeledFd& filesystem, ChecksumInfo info)
    : filesystem_(filesystem), info_(info)
{
}

std::vector<std::vector<Fingerprint>> BlockFingerprinter::fingerprint(const std::vector<FileBlocks>& files,
                                                                     FingerprintCounts& counts)
{
    // One call for all blocks the tree can answer: read_range_checksums walks their disk
    // addresses in order, so blocks of many files near one another share a search.
    std::vector<TreeBlock> tree_blocks;
    for (const FileBlocks& file : files)
        for (const DataBlock& block : file.blocks)
            if (!block.pieces.empty())
                tree_blocks.push_back({block.length, block.pieces});
    std::vector<std::optional<Fingerprint>> from_tree;
    if (!tree_blocks.empty())
        from_tree = fingerprints_from_tree(filesystem_, info_, tree_blocks);

    // The tree's answers come in the order the blocks were listed: the same walk takes them.
    auto next_from_tree = from_tree.begin();
    std::vector<std::vector<Fingerprint>> out(files.size());
    for (size_t f = 0; f < files.size(); ++f) {
        out[f].reserve(files[f].blocks.size());
        for (const DataBlock& block : files[f].blocks) {
            std::optional<Fingerprint> found = block.pieces.empty() ? std::nullopt : *next_from_tree++;
            if (found) {
                counts.from_csums += block.length;
                out[f].push_back(*found);
            } else {
                // A sector the tree does not hold (freed since it was mapped) is read too.
                out[f].push_back(fingerprint_from_file(files[f].file, info_, block.file_offset, block.length, buffer_,
                                                       counts.read));
            }
        }
    }
    return out;
}

} // namespace snapdedupe

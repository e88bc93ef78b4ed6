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
    std::vector<std::pair<size_t, size_t>> tree_slots; // (file, block) of each tree block
    for (size_t f = 0; f < files.size(); ++f)
        for (size_t b = 0; b < files[f].blocks.size(); ++b)
            if (const DataBlock& block = files[f].blocks[b]; !block.pieces.empty()) {
                tree_blocks.push_back({block.length, block.pieces});
                tree_slots.emplace_back(f, b);
            }
    std::vector<std::optional<Fingerprint>> from_tree;
    if (!tree_blocks.empty())
        from_tree = fingerprints_from_tree(filesystem_, info_, tree_blocks);

    std::vector<std::vector<std::optional<Fingerprint>>> found(files.size());
    for (size_t f = 0; f < files.size(); ++f)
        found[f].resize(files[f].blocks.size());
    for (size_t t = 0; t < tree_slots.size(); ++t)
        found[tree_slots[t].first][tree_slots[t].second] = from_tree[t];

    std::vector<std::vector<Fingerprint>> out(files.size());
    for (size_t f = 0; f < files.size(); ++f) {
        out[f].reserve(files[f].blocks.size());
        for (size_t b = 0; b < files[f].blocks.size(); ++b) {
            const DataBlock& block = files[f].blocks[b];
            if (found[f][b]) {
                counts.from_csums += block.length;
                out[f].push_back(*found[f][b]);
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

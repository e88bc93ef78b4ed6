// The planner's questions about a batch's candidate extents, asked before it walks them.
//
// For each candidate the planner asks the kernel who references it (LOGICAL_INO), then, for
// each reference, what the inode is and which extent its file extent item maps. The answers do
// not depend on one another, and each question is a system call on a const fd, so they are
// asked on the run's deduping threads at once: while a batch is planned no dedupe runs, so
// the rule against LOGICAL_INO and a dedupe on one extent at once holds. The planner then
// walks the candidates in order and finds each answer here, as if it had asked it then.
// A question that failed is answered by its error, rethrown where the planner asks it.
#pragma once

#include "plugin/dedupe/filesystem_queries.h"

#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <tuple>
#include <vector>

namespace snapdedupe {

class ReferenceAnswers {
public:
    // Asks about each of `extents` (disk addresses) on `fs.dedupe_threads()` threads; and,
    // where `keepers` (empty, or one per extent) names an address, about the references to
    // that keeper's extent too, if the extent has more than two (the planner may then offer
    // its keeper the exchange, ExtentPlanner::plan).
    ReferenceAnswers(FilesystemQueries& fs, const std::vector<uint64_t>& extents,
                     const std::vector<uint64_t>& keepers = {});

    // nullptr: not asked here (the planner asks the kernel itself).
    const ExtentRefs* references(uint64_t disk_bytenr) const;
    const ExtentRefs* keeper_references(uint64_t address) const;
    // Answered here or by `fs`, each as FilesystemQueries answers it.
    std::optional<InodeInfo> inode_info(uint64_t root, uint64_t inode) const;
    std::vector<FileExtentItem> file_extent_items(uint64_t root, uint64_t inode, uint64_t offset) const;

private:
    template <typename T>
    struct Answer {
        T value{};
        std::exception_ptr error;
        const T& get() const;
    };
    using InodeKey = std::pair<uint64_t, uint64_t>;
    using ItemKey = std::tuple<uint64_t, uint64_t, uint64_t>;
    void ask(uint64_t disk_bytenr, uint64_t keeper, Answer<ExtentRefs>& out);

    FilesystemQueries& fs_;
    std::map<uint64_t, Answer<ExtentRefs>> extents_;
    // Filled by both threads; an inode referenced from many extents is asked about once.
    std::mutex mutex_;
    std::map<InodeKey, Answer<std::optional<InodeInfo>>> inodes_;
    std::map<ItemKey, Answer<std::vector<FileExtentItem>>> items_;
    std::map<uint64_t, Answer<ExtentRefs>> keepers_;
};

} // namespace snapdedupe

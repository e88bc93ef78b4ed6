// What a send stream says changed in a snapshot relative to its parent.
#pragma once

#include "snapshots/send_stream.h"

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace snapdedupe {

struct ByteRange {
    uint64_t offset = 0;
    uint64_t length = 0;
    bool operator==(const ByteRange&) const = default;
};

// A regular file whose data changed. Ranges are sorted, merged and non-empty.
struct FileChange {
    std::string path; // final path in the new snapshot, relative to its root
    std::vector<ByteRange> ranges;
    bool created = false; // the inode is new in this snapshot
};

struct ChangeSet {
    // One entry per inode with data ranges (one of its names if hard-linked), by path.
    std::vector<FileChange> files;
    // Final paths of inodes created; parent paths of inodes removed. New hard links to
    // existing inodes count as added, dropped extra names as removed. Sorted.
    std::vector<std::string> added, removed;
    // parent path -> final path of inodes that moved; never an orphan temp name. A moved
    // directory is listed once; its contents are not repeated. Sorted.
    std::vector<std::pair<std::string, std::string>> renamed;

    uint64_t changed_bytes() const; // sum of all file range lengths
};

// Replays one subvolume's commands the way `btrfs receive` would, but on a model of
// the name tree instead of a filesystem. Paths of the parent snapshot that the stream
// mentions are materialized lazily, since an incremental stream only names what changed.
class ChangeSetBuilder {
public:
    ChangeSetBuilder();
    ~ChangeSetBuilder();
    ChangeSetBuilder(const ChangeSetBuilder&) = delete;
    ChangeSetBuilder& operator=(const ChangeSetBuilder&) = delete;

    // Throws std::runtime_error for commands that cannot apply (a path that does not
    // exist, a second subvolume in the same builder).
    void apply(const send::SendCommand& cmd);
    ChangeSet finish();

private:
    struct Model;
    std::unique_ptr<Model> model_;
};

} // namespace snapdedupe

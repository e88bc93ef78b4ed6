// What a send stream says changed in a snapshot relative to its parent.
#pragma once

#include "snapshots/kernel/byte_range.h"
#include "snapshots/send_stream.h"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace snapdedupe {

// A regular file whose data changed. Ranges are sorted, merged and non-empty.
struct FileChange {
    std::string path; // final path in the new snapshot, relative to its root
    std::vector<ByteRange> ranges;
    bool created = false; // the inode is new in this snapshot
};

// A regular file the stream truncated: TRUNCATE sets its size, and the stream may say
// nothing else about it (a shrink, or a grow that adds only a hole, sends no data command).
// `run` ignores these; the diff lists them.
struct TruncatedFile {
    std::string path; // final path, the same name `files` would use
    // Size before the stream's first TRUNCATE of it, when earlier commands of the stream fixed
    // it (an inode created in the stream starts empty; data commands grow it). Unknown for an
    // inode from the parent snapshot: the stream never carries a file's old size.
    std::optional<uint64_t> old_size;
    uint64_t new_size = 0; // its size when the stream ends (the last TRUNCATE, grown by later data)
    bool created = false;  // the inode is new in this snapshot
    bool operator==(const TruncatedFile&) const = default;
};

// Metadata commands of the stream, as bits of MetadataChange::kinds.
enum MetadataKind : unsigned {
    kMetadataMode = 1u << 0,     // CHMOD
    kMetadataOwner = 1u << 1,    // CHOWN
    kMetadataTimes = 1u << 2,    // UTIMES
    kMetadataXattr = 1u << 3,    // SET_XATTR, REMOVE_XATTR
    kMetadataFileattr = 1u << 4, // FILEATTR (protocol 2)
    kMetadataVerity = 1u << 5,   // ENABLE_VERITY (protocol 2)
};

// The metadata commands the stream applied to one inode (any kind: file, directory,
// symlink...). `run` ignores these; the diff lists them.
struct MetadataChange {
    std::string path; // final path ("." for the subvolume root), the same name `files` would use
    unsigned kinds = 0; // MetadataKind bits
    bool created = false;
    bool operator==(const MetadataChange&) const = default;
};

// "mode,owner,times,xattr,fileattr,verity": the kinds set in `kinds`, in that order.
std::string metadata_kind_names(unsigned kinds);

struct ChangeSet {
    // One entry per inode with data ranges (one of its names if hard-linked), by path.
    std::vector<FileChange> files;
    // Final paths of inodes created; parent paths of inodes removed. New hard links to
    // existing inodes count as added, dropped extra names as removed. Sorted.
    std::vector<std::string> added, removed;
    // parent path -> final path of inodes that moved; never an orphan temp name. A moved
    // directory is listed once; its contents are not repeated. Sorted.
    std::vector<std::pair<std::string, std::string>> renamed;

    // The diff's view: filled only by a builder made with View::kDiff (the run reads `files`
    // alone and does not pay for these). One entry per inode that still has a name, by path.
    std::vector<TruncatedFile> truncated;
    std::vector<MetadataChange> metadata;
    // Final path (every name) -> inode number, for inodes whose number the stream states. Only
    // commands that create an inode (MKFILE, MKDIR, MKNOD, MKFIFO, MKSOCK, SYMLINK) carry INO,
    // in protocol 1 and 2 alike, so inodes from the parent snapshot are not here.
    std::map<std::string, uint64_t> inode_numbers;

    uint64_t changed_bytes() const; // sum of all file range lengths
};

// Commands that cannot apply to the name tree: the stream is as broken as one with a bad CRC.
// problem() is the bare problem ("refers to missing path 'a/b'"), for a caller that knows
// the stream's name and the command's offset to put around it.
class ChangeSetError : public Error {
public:
    explicit ChangeSetError(const std::string& problem)
        : Error(ExitCode::kBadStream, "send stream " + problem), problem_(problem)
    {
    }
    const std::string& problem() const { return problem_; }

private:
    std::string problem_;
};

// Replays one subvolume's commands the way `btrfs receive` would, but on a model of
// the name tree instead of a filesystem. Paths of the parent snapshot that the stream
// mentions are materialized lazily, since an incremental stream only names what changed.
class ChangeSetBuilder {
public:
    // kRun: `files`, `added`, `removed`, `renamed`. kDiff: also `truncated`, `metadata` and
    // `inode_numbers`, at some memory per inode the stream touches. `files` is the same in both.
    enum class View { kRun, kDiff };

    explicit ChangeSetBuilder(View view = View::kRun);
    ~ChangeSetBuilder();
    ChangeSetBuilder(const ChangeSetBuilder&) = delete;
    ChangeSetBuilder& operator=(const ChangeSetBuilder&) = delete;

    // Throws ChangeSetError for commands that cannot apply (a path that does not
    // exist, a second subvolume in the same builder).
    void apply(const send::SendCommand& cmd);
    ChangeSet finish();

private:
    struct Model;
    std::unique_ptr<Model> model_;
};

} // namespace snapdedupe

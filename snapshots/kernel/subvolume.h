// Subvolumes: what libbtrfsutil says of one, and one found by discovery with its root
// directory still open, so nothing later resolves its path again.
#pragma once

#include "snapshots/kernel/labeled_fd.h"
#include "snapshots/kernel/uuid.h"

#include <cstdint>
#include <optional>
#include <string>

namespace snapdedupe {

struct SubvolumeInfo {
    uint64_t root_id = 0;
    uint64_t parent_id = 0; // the subvolume it sits in; 0 once it is deleted
    Uuid uuid{};
    Uuid parent_uuid{};
    Uuid received_uuid{};
    // Creation transaction. Snapshots are ordered by it, not by generation: a dedupe bumps a
    // snapshot's generation but never its otransid.
    uint64_t otransid = 0;
    bool read_only = false;
};

// A subvolume and an fd on its root directory; `path` (the fd's label) is where it was found
// and only names it in messages and reports.
struct Subvolume : SubvolumeInfo {
    LabeledFd dir;
    std::string path;
};

// The subvolume whose root directory `dir` is; `dir` moves into it.
Subvolume open_subvolume(LabeledFd dir);

// Subvolume `root` of the filesystem `filesystem` is on, or nothing when there is none.
// Needs CAP_SYS_ADMIN.
std::optional<SubvolumeInfo> subvolume_info(const LabeledFd& filesystem, uint64_t root);

} // namespace snapdedupe

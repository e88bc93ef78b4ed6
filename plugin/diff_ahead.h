// The next snapshot's change set, sent for on a thread of its own while the run dedupes the
// current one.
//
// The metadata-only send is a fifth of a full run's CPU, on the thread that also dedupes,
// while the machine's other core idles. It cannot run ahead within a lineage: a send holds
// its snapshot and its parent, and the kernel refuses (EAGAIN) a dedupe into a root a send
// holds, which is most of a lineage's dedupes. The run takes lineages in turn instead, so the
// snapshot after this one is another lineage's, whose roots this one's dedupes do not touch.
// If one does (a reference moved into the other lineage), that move waits in the journal
// like any other busy one, and the end of the run retries it once every send has ended.
#pragma once

#include "snapshots/change_set.h"
#include "snapshots/snapshot_list.h"

#include <cstdint>
#include <future>
#include <optional>

namespace snapdedupe {

class DiffAhead {
public:
    // Starts diffing `snapshot` against `parent` (nullptr: a full stream) on a thread of its
    // own; with no thread to be had, starts nothing (is_for is false). Both must outlive this
    // object.
    DiffAhead(const Snapshot& snapshot, const Snapshot* parent);
    ~DiffAhead(); // waits for the send to end
    DiffAhead(const DiffAhead&) = delete;
    DiffAhead& operator=(const DiffAhead&) = delete;

    bool is_for(const Snapshot& snapshot, const Snapshot* parent) const;

    // The change set; nothing when the send failed. The caller then sends again, in line,
    // where a failure is told apart (the snapshot or its parent deleted meanwhile, busy,
    // a path too long) and handled as the run always does.
    std::optional<ChangeSet> take();

private:
    uint64_t root_id_;
    std::optional<uint64_t> parent_root_;
    std::future<ChangeSet> result_;
};

} // namespace snapdedupe

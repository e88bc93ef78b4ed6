// When the journal's settled moves leave the index: after the filesystem has committed them
// (plugin/dedupe/move_journal.h, IndexJournal). A run commits at its end anyway, for its space
// figures; a long run also commits at the end of a snapshot once the kernel's own commit
// interval has passed since the last, so a kill or a power cut leaves the next run at most
// about that much to find moved again, and a short nightly run commits no more than before.
#pragma once

#include "plugin/dedupe/move_journal.h"
#include "snapshots/kernel/labeled_fd.h"

#include <chrono>

namespace snapdedupe {

class CommitPoint {
public:
    // btrfs's default commit interval (mount option commit=30).
    static constexpr std::chrono::seconds kInterval{30};

    CommitPoint(const LabeledFd& filesystem, IndexJournal& journal);

    // At the end of a snapshot, inside its transaction: commits and writes the held
    // settlements if the interval has passed since the last commit.
    void at_snapshot_end();
    // Commits and writes them now, inside the caller's transaction, if any are held.
    void now();
    // After a commit the caller made (the space figures'): writes them.
    void committed();

private:
    const LabeledFd& filesystem_;
    IndexJournal& journal_;
    std::chrono::steady_clock::time_point last_commit_;
};

} // namespace snapdedupe

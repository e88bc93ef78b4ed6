// Where the mover writes down what it is about to do, before it does it, and what came of it:
// the intent journal. A run killed between two dedupe calls leaves some references of an
// extent on the keeper and the rest on the old extent; the old extent is freed only when the
// rest move too, and nothing else would ever find them (the moved ones now look known). So
// every move is recorded, durably, before the first of its extent runs, and leaves the record
// only when it is settled; the next run finishes what is left (SnapshotPass::finish_journal).
#pragma once

#include "index/block_index.h"

#include <map>
#include <vector>

namespace snapdedupe {

class MoveJournal {
public:
    virtual ~MoveJournal() = default;
    // Records every move, and makes the record durable, before any of them runs.
    virtual void record(const std::vector<DeferredMove>& moves) = 0;
    // The move of the reference at `where` moved, or its file is gone, or its bytes differ.
    virtual void settle(const BlockLocation& where) = 0;
    // The move stays for later: busy (EAGAIN; also a writable reference not tried because its
    // extent's read-only references were busy), failed (its errno), or not tried (0).
    virtual void keep(const DeferredMove& move) = 0;
};

// The journal in the index's `deferred` table. record() commits the transaction open on the
// index and opens the next, so the record survives a kill; everything else rides on the
// caller's transaction.
//
// A settled move leaves the table only once the filesystem has committed it: until then a
// power cut rolls the dedupe back, and a row gone already would leave the copy where no run
// looks again (its snapshot is processed). So settle() only holds the move, and
// write_settled() takes the held ones out; the caller calls it right after a commit
// (sync_filesystem). A run killed before that leaves them for the next run, which finds them
// moved, or moves them again.
//
// The table holds one row per reference (its file and offset). A reference settled in one
// batch can be recorded again in a later one before the commit: a later extent's planner finds
// it among a keeper's references. Its row is then the later move's, and is no longer held:
// taking it out at the commit would lose that move if it stays (busy behind a send), with
// nothing to say so.
class IndexJournal final : public MoveJournal {
public:
    IndexJournal(Database& db, BlockIndex& index) : db_(db), index_(index) {}
    void record(const std::vector<DeferredMove>& moves) override;
    void settle(const BlockLocation& where) override;
    void keep(const DeferredMove& move) override;

    bool holds_settled() const { return !held_.empty(); }
    // Into the caller's transaction.
    void write_settled();

private:
    Database& db_;
    BlockIndex& index_;
    std::map<DeferredKey, BlockLocation> held_;
};

} // namespace snapdedupe

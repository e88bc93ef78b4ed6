// A MoveJournal in memory for the engine's unit tests: the rows it holds now, keyed as the
// index's `deferred` table keys them (root, inode, file_offset), and every call in order, so a
// test sees both what a retry would start from and when the mover wrote what.
#pragma once

#include "plugin/dedupe/move_journal.h"

#include <algorithm>
#include <map>
#include <tuple>
#include <vector>

namespace snapdedupe::testing {

class RecordingJournal : public MoveJournal {
public:
    enum class Op { record, settle, keep };
    // One call: record's moves, keep's one move, or settle's location (in moves[0].where).
    struct Entry {
        Op op;
        std::vector<DeferredMove> moves;
    };
    using Key = DeferredKey; // the table's primary key

    void record(const std::vector<DeferredMove>& moves) override
    {
        log_.push_back({Op::record, moves});
        for (const DeferredMove& m : moves)
            rows_[key(m.where)] = m;
    }
    void settle(const BlockLocation& where) override
    {
        DeferredMove m;
        m.where = where;
        log_.push_back({Op::settle, {m}});
        rows_.erase(key(where));
    }
    void keep(const DeferredMove& move) override
    {
        log_.push_back({Op::keep, {move}});
        rows_[key(move.where)] = move;
    }

    // --- Reading it ---

    const std::map<Key, DeferredMove>& rows() const { return rows_; }
    bool empty() const { return rows_.empty(); }
    // The row of the reference at (file, offset), or nullptr.
    const DeferredMove* row(const InodeHandle& file, uint64_t offset) const
    {
        auto it = rows_.find({file.root, file.inode, offset});
        return it == rows_.end() ? nullptr : &it->second;
    }
    const std::vector<Entry>& log() const { return log_; }
    size_t count(Op op) const
    {
        return static_cast<size_t>(
            std::count_if(log_.begin(), log_.end(), [&](const Entry& e) { return e.op == op; }));
    }

    static Key key(const BlockLocation& where) { return deferred_key(where); }

private:
    std::map<Key, DeferredMove> rows_;
    std::vector<Entry> log_;
};

} // namespace snapdedupe::testing

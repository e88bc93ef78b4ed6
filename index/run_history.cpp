#include "index/run_history.h"

#include "index/index_file.h"

namespace snapdedupe {

namespace {

std::optional<int64_t> nullable(const Statement& st, int column)
{
    return st.is_null(column) ? std::nullopt : std::optional<int64_t>(st.int64(column));
}

void bind_nullable(Statement& st, int index, const std::optional<int64_t>& value)
{
    if (value)
        st.bind(index, *value);
    // else: a bound parameter is NULL until bound
}

} // namespace

void append_run(Database& db, const RunRecord& run)
{
    Statement st = db.prepare("INSERT INTO runs (started_at, seconds, exit_code, snapshots, bytes_hashed, bytes_deduped, "
                              "data_freed, metadata_growth, net_freed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)");
    st.bind(1, run.started_at).bind(2, run.seconds).bind(3, int64_t{run.exit_code}).bind(4, run.snapshots);
    st.bind(5, run.bytes_hashed).bind(6, run.bytes_deduped);
    bind_nullable(st, 7, run.data_freed);
    bind_nullable(st, 8, run.metadata_growth);
    bind_nullable(st, 9, run.net_freed);
    st.run();
}

std::vector<RunRecord> recent_runs(Database& db, int limit)
{
    std::vector<RunRecord> out;
    if (!index_has_table(db, "runs"))
        return out;
    Statement st = db.prepare("SELECT started_at, seconds, exit_code, snapshots, bytes_hashed, bytes_deduped, "
                              "data_freed, metadata_growth, net_freed FROM runs ORDER BY id DESC LIMIT ?1");
    st.bind(1, int64_t{limit});
    auto u = [&](int col) { return static_cast<uint64_t>(st.int64(col)); };
    while (st.step()) {
        RunRecord r;
        r.started_at = st.int64(0);
        r.seconds = st.real(1);
        r.exit_code = static_cast<int>(st.int64(2));
        r.snapshots = u(3);
        r.bytes_hashed = u(4);
        r.bytes_deduped = u(5);
        r.data_freed = nullable(st, 6);
        r.metadata_growth = nullable(st, 7);
        r.net_freed = nullable(st, 8);
        out.push_back(r);
    }
    return out;
}

RunTotals run_totals(Database& db)
{
    RunTotals t;
    if (!index_has_table(db, "runs"))
        return t;
    // SUM skips NULLs: a run that failed before it measured usage adds nothing there.
    Statement st = db.prepare("SELECT count(*), min(started_at), coalesce(sum(exit_code != 0), 0), "
                              "coalesce(sum(snapshots), 0), coalesce(sum(bytes_hashed), 0), "
                              "coalesce(sum(bytes_deduped), 0), coalesce(sum(data_freed), 0), "
                              "coalesce(sum(metadata_growth), 0), coalesce(sum(net_freed), 0) FROM runs");
    if (!st.step())
        return t;
    t.runs = static_cast<uint64_t>(st.int64(0));
    t.since = nullable(st, 1);
    t.failed_runs = static_cast<uint64_t>(st.int64(2));
    t.snapshots = static_cast<uint64_t>(st.int64(3));
    t.bytes_hashed = static_cast<uint64_t>(st.int64(4));
    t.bytes_deduped = static_cast<uint64_t>(st.int64(5));
    t.data_freed = st.int64(6);
    t.metadata_growth = st.int64(7);
    t.net_freed = st.int64(8);
    st.reset();
    return t;
}

} // namespace snapdedupe
